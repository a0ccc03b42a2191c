//! Loading files into a node before it serves (`distkv server -l FILE…`).
//!
//! The format is recognised by its first bytes: our snapshots (`DKVSNAP\n`),
//! event-log segments (`DKVLOG\r\n`) and DistKV-py save/log files (a
//! msgpack map); a directory is read as
//! event-log segments, or as a data directory (newest snapshot + the log
//! after it). Every entry and change goes
//! through [`State::apply`], so loaded data also reaches the node's own event
//! log (and with it, its files); state records restore tick bookkeeping.
//! Deletions are replayed too (Python's loader lost them).
//! `authoritative` then marks every tick still missing as superseded: the
//! loaded files are declared complete.

use std::fs::File;
use std::io::Read;
use std::path::{Path as FsPath, PathBuf};

use distkv_model::UpdateEvent;
use distkv_snapshot::{Item, SnapshotReader};

use crate::admit::{Admit, Open, Refused};
use crate::pyfiles::{looks_like_pyfile, PyReader, PyRecord};
use crate::state::{Applied, State};

/// What loading a file did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Events applied (stored).
    pub applied: u64,
    /// Events that were already there, stale or lost a conflict.
    pub skipped: u64,
    /// State records (or snapshot node records) used.
    pub states: u64,
    /// Records not understood.
    pub unknown: u64,
    /// The file ended inside a record (a crash while writing it).
    pub truncated: bool,
    /// Events an event log says were lost to damage (lost records a
    /// salvage left).
    pub lost: u64,
}

/// A file that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The node refused the file's events (nothing after the refused
    /// event is applied).
    #[error("{file}: refused: {why}")]
    Refused {
        /// The file.
        file: PathBuf,
        /// Why.
        why: Refused,
    },
    /// The file is damaged or not in a known format.
    #[error("{file}: {reason}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(file: &FsPath, reason: impl ToString) -> LoadError {
    LoadError::Invalid {
        file: file.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Applies `ev` if `admit` lets it, and counts it.
fn apply(
    st: &mut State,
    admit: &dyn Admit,
    ev: UpdateEvent,
    report: &mut LoadReport,
    file: &FsPath,
) -> Result<(), LoadError> {
    admit.event(st, &ev).map_err(|why| LoadError::Refused {
        file: file.to_path_buf(),
        why,
    })?;
    match st.apply(ev) {
        Applied::Stored(_) => report.applied += 1,
        _ => report.skipped += 1,
    }
    Ok(())
}

/// Loads one file or directory into `st`: a snapshot, a DistKV-py file, a
/// directory of event-log segments, or a whole data directory (its newest
/// snapshot and the log after it).
pub fn load_file(st: &mut State, file: &FsPath) -> Result<LoadReport, LoadError> {
    load_file_admitted(st, file, &Open)
}

/// [`load_file`], every event passing `admit` first (the node's commit
/// path): the file is refused if the node takes no events now, and loading
/// stops at the first event refused.
pub fn load_file_admitted(
    st: &mut State,
    file: &FsPath,
    admit: &dyn Admit,
) -> Result<LoadReport, LoadError> {
    admit.batch(st).map_err(|why| LoadError::Refused {
        file: file.to_path_buf(),
        why,
    })?;
    let io = |source| LoadError::Io {
        file: file.to_path_buf(),
        source,
    };
    if file.is_dir() {
        return load_dir(st, file, admit);
    }
    let mut head = [0u8; 8];
    let n = File::open(file)
        .and_then(|mut f| f.read(&mut head))
        .map_err(io)?;
    let head = &head[..n];
    if head == distkv_snapshot::MAGIC {
        return load_snapshot(st, file, admit);
    }
    if head == distkv_log::segment::MAGIC {
        let mode = distkv_log::writer::RecoveryMode::TruncateTail;
        let reader =
            distkv_log::reader::SegmentReader::open(file, mode).map_err(|e| invalid(file, e))?;
        return apply_log(st, reader.map(|r| r.map(|s| s.record)), file, admit);
    }
    if head.is_empty() || looks_like_pyfile(head) {
        let bytes = std::fs::read(file).map_err(io)?;
        return load_pyfile(st, file, &bytes, admit);
    }
    Err(invalid(
        file,
        "unknown file format (not a distkv snapshot or a DistKV msgpack file)",
    ))
}

fn load_dir(st: &mut State, dir: &FsPath, admit: &dyn Admit) -> Result<LoadReport, LoadError> {
    let mut report = LoadReport::default();
    let (log_dir, from) = if dir.join("log").is_dir() {
        // A data directory: the newest snapshot, then the log after it.
        let snaps =
            super::recover::list_snapshots(&dir.join("snap")).map_err(|e| invalid(dir, e))?;
        match snaps.first() {
            Some((seq, path)) => {
                report = load_snapshot(st, path, admit)?;
                (dir.join("log"), seq + 1)
            }
            None => (dir.join("log"), 0),
        }
    } else {
        (dir.to_path_buf(), 0)
    };
    let reader = distkv_log::LogReader::open(&log_dir, from).map_err(|e| invalid(&log_dir, e))?;
    let more = apply_log(st, reader, &log_dir, admit)?;
    report.applied += more.applied;
    report.skipped += more.skipped;
    report.states += more.states;
    report.lost += more.lost;
    Ok(report)
}

/// Applies log records (events and state records).
fn apply_log(
    st: &mut State,
    records: impl Iterator<Item = Result<distkv_log::LogRecord, distkv_log::LogError>>,
    origin: &FsPath,
    admit: &dyn Admit,
) -> Result<LoadReport, LoadError> {
    let mut report = LoadReport::default();
    for rec in records {
        match rec.map_err(|e| invalid(origin, e))? {
            distkv_log::LogRecord::Event { event, .. } => {
                apply(st, admit, event, &mut report, origin)?
            }
            distkv_log::LogRecord::State {
                nodes,
                known,
                deleted,
                ..
            } => {
                st.restore_state(nodes.iter().map(|(n, t)| (&**n, *t)), &known, &deleted);
                report.states += 1;
            }
            distkv_log::LogRecord::Lost { from, seq, .. } => {
                report.lost += (seq + 1).saturating_sub(from);
            }
        }
    }
    Ok(report)
}

fn load_snapshot(
    st: &mut State,
    file: &FsPath,
    admit: &dyn Admit,
) -> Result<LoadReport, LoadError> {
    // Read everything first: a damaged snapshot must not be half applied.
    let reader = SnapshotReader::open(file).map_err(|e| invalid(file, e))?;
    let items: Vec<Item> = reader
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(file, e))?;
    let mut report = LoadReport::default();
    for item in items {
        match item {
            Item::Node(n) => {
                st.restore_node(&n.name, n.tick, &n.known, &n.deleted);
                report.states += 1;
            }
            Item::Entry(e) => match e.chain {
                Some(chain) => {
                    let ev = UpdateEvent {
                        path: e.path,
                        chain,
                        value: e.value,
                        tock: e.tock,
                    };
                    apply(st, admit, ev, &mut report, file)?;
                }
                None => report.unknown += 1,
            },
        }
    }
    Ok(report)
}

fn load_pyfile(
    st: &mut State,
    file: &FsPath,
    bytes: &[u8],
    admit: &dyn Admit,
) -> Result<LoadReport, LoadError> {
    let mut report = LoadReport::default();
    for rec in PyReader::new(bytes) {
        match rec.map_err(|e| invalid(file, e))? {
            PyRecord::Event(ev) => apply(st, admit, ev, &mut report, file)?,
            PyRecord::State(s) => {
                s.apply_to(st);
                report.states += 1;
            }
            PyRecord::Unknown(_) => report.unknown += 1,
            PyRecord::Truncated { .. } => report.truncated = true,
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use distkv_log::LogLimits;
    use distkv_model::{codec, path, Value};

    #[test]
    fn distkv_py_file_with_a_deletion_loads_with_the_deletion() -> Result<(), LoadError> {
        let dir = std::env::temp_dir().join(format!("distkv-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("py.dkv");
        let chain = |t: i64| {
            Value::map([
                ("node", Value::str("n1")),
                ("tick", Value::Int(t)),
                ("prev", Value::Nil),
            ])
        };
        let mut b = Vec::new();
        for (p, d, t, v) in [(vec!["a"], 0, 1, Some(1)), (vec!["b"], 0, 2, Some(2))] {
            let mut m = vec![
                ("chain", chain(t)),
                ("depth", Value::Int(d)),
                (
                    "path",
                    Value::Path(p.into_iter().map(Value::from).collect::<Vec<_>>().into()),
                ),
                ("tock", Value::Int(t * 10)),
            ];
            if let Some(v) = v {
                m.push(("value", Value::Int(v)));
            }
            codec::encode(&Value::map(m), &mut b);
        }
        // A change record deleting `a`.
        codec::encode(
            &Value::map([
                ("depth", Value::Int(0)),
                ("node", Value::str("n1")),
                ("path", Value::Path(path!["a"])),
                ("prev", Value::Nil),
                ("tick", Value::Int(3)),
                ("tock", Value::Int(30)),
            ]),
            &mut b,
        );
        std::fs::write(&file, &b).unwrap();
        let mut st = State::new("n1", LogLimits::default());
        let r = load_file(&mut st, &file)?;
        assert_eq!((r.applied, r.truncated), (3, false));
        assert_eq!(st.entry(&path!["a"]).and_then(|e| e.data_cloned()), None);
        assert_eq!(
            st.entry(&path!["b"]).and_then(|e| e.data_cloned()),
            Some(Value::Int(2))
        );
        assert_eq!(
            st.tick(),
            Some(3),
            "a loaded file naming this node makes it ready"
        );
        std::fs::write(&file, b"garbage!").unwrap();
        assert!(matches!(
            load_file(&mut st, &file),
            Err(LoadError::Invalid { .. })
        ));
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }
}
