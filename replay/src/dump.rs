//! `dump`: the records of history files, as they are.
//!
//! Inputs are dumped in the order given, each file front to back: a data
//! directory as its metadata, its snapshots (oldest first), then its
//! segments; a segment directory as its segments. Each file starts with a
//! header record (node, first seq or seq, creation time), then come its
//! records: events (seq, time, tock, `node:tick` chain, path, value or
//! deletion), state records, snapshot items, and any damage found (which
//! ends that file). A path prefix keeps only events and entries at or
//! below it (headers and damage stay). Nothing is replayed.

use std::path::{Path, PathBuf};

use distkv_core::persist::meta::Meta;
use distkv_core::persist::recover::list_snapshots;
use distkv_log::list_segments;
use distkv_model::{NodeSet, Path as KvPath, Value};
use distkv_snapshot::SnapshotReader;

use crate::engine::chain_text;
use crate::error::{Error, Result};
use crate::output::Doc;
use crate::source::{
    detect, Damage, History, HistoryStream, Kind, Loc, Pos, Rec, SegFile, StateRec, StreamSpec,
};
use crate::time::format_ms;

/// One dumped record: its report value and its line of text.
#[derive(Debug, Clone)]
pub struct Item {
    /// As a report map.
    pub value: Value,
    /// As text.
    pub text: String,
    /// Whether this is damage.
    pub damage: bool,
}

/// What a dump saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Files read.
    pub files: u64,
    /// Records written out.
    pub records: u64,
    /// Damage found.
    pub damage: u64,
}

fn header_item(value: Value, text: String) -> Item {
    Item {
        value,
        text,
        damage: false,
    }
}

fn node_set_value(s: &NodeSet) -> Value {
    Value::Map(
        s.0.iter()
            .filter(|(_, r)| !r.is_empty())
            .map(|(n, r)| (Value::Str(n.clone()), Value::str(&r.to_string())))
            .collect(),
    )
}

fn node_set_text(s: &NodeSet) -> String {
    let parts: Vec<String> =
        s.0.iter()
            .filter(|(_, r)| !r.is_empty())
            .map(|(n, r)| format!("{n}:{}", r))
            .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

fn loc_fields(d: Doc, loc: &Loc) -> Doc {
    match loc.pos {
        Pos::Seq { seq, offset } => d
            .put("seq", Value::uint(seq))
            .put("offset", Value::uint(offset)),
        Pos::Record(n) => d.put("record", Value::uint(n)),
        Pos::Snapshot => d,
    }
}

fn loc_text(loc: &Loc) -> String {
    match loc.pos {
        Pos::Seq { seq, .. } => format!("seq {seq}"),
        Pos::Record(n) => format!("record {n}"),
        Pos::Snapshot => String::new(),
    }
}

fn value_fields(d: Doc, value: Option<&Value>) -> Doc {
    match value {
        Some(v) => d.put("value", v.clone()),
        None => d.put("deleted", true),
    }
}

fn value_text(path: &KvPath, value: Option<&Value>) -> String {
    match value {
        Some(v) => format!("{path} = {v}"),
        None => format!("{path} deleted"),
    }
}

/// The dump item of a record; `None` if `prefix` filters it out.
pub fn rec_item(rec: &Rec, prefix: Option<&KvPath>) -> Option<Item> {
    let keep = |p: &KvPath| prefix.is_none_or(|x| p.starts_with(x));
    let item = |value: Doc, text: String| {
        Some(Item {
            value: value.value(),
            text,
            damage: false,
        })
    };
    match rec {
        Rec::Event {
            loc,
            time_ms,
            event,
            ..
        } => {
            if !keep(&event.path) {
                return None;
            }
            let d = loc_fields(Doc::new().put("kind", "event"), loc)
                .opt("time", time_ms.map(|t| Value::str(&format_ms(t))))
                .put("tock", Value::uint(event.tock))
                .put("chain", chain_text(&event.chain).as_str())
                .put("path", Value::Path(event.path.clone()));
            let time = time_ms.map_or(String::new(), |t| format!(" {}", format_ms(t)));
            let text = format!(
                "{}{time} tock {} [{}] {}",
                loc_text(loc),
                event.tock,
                chain_text(&event.chain),
                value_text(&event.path, event.value.as_ref())
            );
            item(value_fields(d, event.value.as_ref()), text)
        }
        Rec::State {
            loc,
            time_ms,
            state,
        } => {
            if prefix.is_some() {
                return None;
            }
            let StateRec {
                nodes,
                known,
                deleted,
                tock,
                skipped,
            } = state;
            let nodes_v = Value::Map(
                nodes
                    .iter()
                    .map(|(n, t)| (Value::Str(n.clone()), t.map_or(Value::Nil, Value::uint)))
                    .collect(),
            );
            let d = loc_fields(Doc::new().put("kind", "state"), loc)
                .opt("time", time_ms.map(|t| Value::str(&format_ms(t))))
                .opt("tock", tock.map(Value::uint))
                .put("nodes", nodes_v)
                .put("known", node_set_value(known))
                .put("deleted", node_set_value(deleted))
                .opt(
                    "skipped",
                    (!skipped.is_empty()).then(|| Value::str(&skipped.to_string())),
                );
            let ticks: Vec<String> = nodes
                .iter()
                .map(|(n, t)| match t {
                    Some(t) => format!("{n}={t}"),
                    None => format!("{n}=-"),
                })
                .collect();
            let time = time_ms.map_or(String::new(), |t| format!(" {}", format_ms(t)));
            let mut text = format!(
                "{}{time} state: ticks {} known {} deleted {}",
                loc_text(loc),
                ticks.join(" "),
                node_set_text(known),
                node_set_text(deleted)
            );
            if !skipped.is_empty() {
                text.push_str(&format!(" skipped {}", skipped));
            }
            item(d, text)
        }
        Rec::Node { node, .. } => {
            if prefix.is_some() {
                return None;
            }
            let d = Doc::new()
                .put("kind", "node")
                .put("name", Value::Str(node.name.clone()))
                .put("tick", node.tick.map_or(Value::Nil, Value::uint))
                .put("known", node.known.to_string().as_str())
                .put("deleted", node.deleted.to_string().as_str());
            let text = format!(
                "node {} tick {} known {} deleted {}",
                node.name,
                node.tick.map_or("-".into(), |t| t.to_string()),
                node.known,
                node.deleted
            );
            item(d, text)
        }
        Rec::Entry { entry, .. } => {
            if !keep(&entry.path) {
                return None;
            }
            let chain = entry.chain.as_ref().map(chain_text);
            let d = Doc::new()
                .put("kind", "entry")
                .put("tock", Value::uint(entry.tock))
                .opt("chain", chain.as_deref().map(Value::str))
                .put("path", Value::Path(entry.path.clone()));
            let text = format!(
                "entry tock {} [{}] {}",
                entry.tock,
                chain.as_deref().unwrap_or("-"),
                value_text(&entry.path, entry.value.as_ref())
            );
            item(value_fields(d, entry.value.as_ref()), text)
        }
        Rec::Unknown { loc, value } => {
            if prefix.is_some() {
                return None;
            }
            let d = loc_fields(Doc::new().put("kind", "unknown"), loc).put("value", value.clone());
            item(d, format!("{} unknown record {value}", loc_text(loc)))
        }
        Rec::Damage(d) => Some(damage_item(d)),
    }
}

fn damage_item(d: &Damage) -> Item {
    Item {
        value: Doc::new()
            .put("kind", "damage")
            .put("damage", d.kind.name())
            .put("file", d.file.display().to_string().as_str())
            .opt("offset", d.offset.map(Value::uint))
            .put("reason", d.reason.as_str())
            .value(),
        text: format!("DAMAGE {}", d.to_text()),
        damage: true,
    }
}

fn stream_file(
    h: History,
    spec: StreamSpec,
    prefix: Option<&KvPath>,
    sum: &mut Summary,
    emit: &mut dyn FnMut(&Item) -> Result<()>,
) -> Result<()> {
    for rec in HistoryStream::new(&h, spec)? {
        if let Some(item) = rec_item(&rec?, prefix) {
            sum.records += 1;
            if item.damage {
                sum.damage += 1;
            }
            emit(&item)?;
        }
    }
    Ok(())
}

/// Dumps one segment; `closed` when a newer one is known to exist (then a
/// torn tail is corruption, not a crash's leftover).
fn segment(
    path: &Path,
    closed: bool,
    prefix: Option<&KvPath>,
    sum: &mut Summary,
    emit: &mut dyn FnMut(&Item) -> Result<()>,
) -> Result<()> {
    sum.files += 1;
    let bytes = std::fs::metadata(path)
        .map_err(crate::error::io_err(path))?
        .len();
    let first_seq = match distkv_log::read_segment_header(path) {
        Ok(h) => {
            let v = Doc::new()
                .put("kind", "segment")
                .put("file", path.display().to_string().as_str())
                .put("node", Value::Str(h.node.clone()))
                .put("first_seq", Value::uint(h.first_seq))
                .put("created", format_ms(h.created_ms).as_str())
                .value();
            let text = format!(
                "== segment {}: node {}, first seq {}, created {}",
                path.display(),
                h.node,
                h.first_seq,
                format_ms(h.created_ms)
            );
            emit(&header_item(v, text))?;
            h.first_seq
        }
        Err(e) => {
            let d = Damage::from_log(e)?;
            sum.damage += 1;
            return emit(&damage_item(&d));
        }
    };
    let h = History {
        segments: vec![SegFile {
            path: path.to_path_buf(),
            first_seq,
            bytes,
        }],
        ..History::default()
    };
    let spec = StreamSpec {
        strict: closed,
        ..StreamSpec::default()
    };
    stream_file(h, spec, prefix, sum, emit)
}

fn segments(
    dir: &Path,
    prefix: Option<&KvPath>,
    sum: &mut Summary,
    emit: &mut dyn FnMut(&Item) -> Result<()>,
) -> Result<()> {
    let list = list_segments(dir)?;
    for (i, s) in list.iter().enumerate() {
        segment(&s.path, i + 1 < list.len(), prefix, sum, emit)?;
    }
    Ok(())
}

fn snapshot(
    path: &Path,
    prefix: Option<&KvPath>,
    sum: &mut Summary,
    emit: &mut dyn FnMut(&Item) -> Result<()>,
) -> Result<()> {
    sum.files += 1;
    match SnapshotReader::open(path) {
        Ok(r) => {
            let h = r.header();
            let v = Doc::new()
                .put("kind", "snapshot")
                .put("file", path.display().to_string().as_str())
                .put("node", Value::Str(h.node.clone()))
                .put("seq", Value::uint(h.seq))
                .put("tock", Value::uint(h.tock))
                .put("created", format_ms(h.created_ms).as_str())
                .value();
            let text = format!(
                "== snapshot {}: node {}, seq {}, tock {}, created {}",
                path.display(),
                h.node,
                h.seq,
                h.tock,
                format_ms(h.created_ms)
            );
            emit(&header_item(v, text))?;
        }
        Err(e) => {
            let d = Damage::from_snapshot(e)?;
            sum.damage += 1;
            return emit(&damage_item(&d));
        }
    }
    let spec = StreamSpec {
        snapshot: Some(path.to_path_buf()),
        ..StreamSpec::default()
    };
    stream_file(History::default(), spec, prefix, sum, emit)
}

fn pyfile(
    path: &Path,
    prefix: Option<&KvPath>,
    sum: &mut Summary,
    emit: &mut dyn FnMut(&Item) -> Result<()>,
) -> Result<()> {
    sum.files += 1;
    let v = Doc::new()
        .put("kind", "distkv-py")
        .put("file", path.display().to_string().as_str())
        .value();
    emit(&header_item(
        v,
        format!("== DistKV-py file {}", path.display()),
    ))?;
    let h = History {
        py: Some(path.to_path_buf()),
        ..History::default()
    };
    stream_file(h, StreamSpec::default(), prefix, sum, emit)
}

/// Dumps `inputs`, handing each record to `emit` as it is read.
pub fn dump(
    inputs: &[PathBuf],
    prefix: Option<&KvPath>,
    emit: &mut dyn FnMut(&Item) -> Result<()>,
) -> Result<Summary> {
    let mut sum = Summary::default();
    for path in inputs {
        let input = detect(path)?;
        match input.kind {
            Kind::DataDir => {
                if let Some(m) = Meta::load(path)? {
                    let v = Doc::new()
                        .put("kind", "meta")
                        .put("dir", path.display().to_string().as_str())
                        .put("node", m.node.as_str())
                        .put("reserved_tick", Value::uint(m.reserved_tick))
                        .value();
                    let text = format!(
                        "== data directory {}: node {}, ticks reserved up to {}",
                        path.display(),
                        m.node,
                        m.reserved_tick
                    );
                    emit(&header_item(v, text))?;
                }
                let snaps = list_snapshots(&path.join("snap")).map_err(|e| {
                    Error::InvalidInput(format!("{}: {e}", path.join("snap").display()))
                })?;
                for (_, p) in snaps.into_iter().rev() {
                    snapshot(&p, prefix, &mut sum, emit)?;
                }
                let log = path.join("log");
                if log.is_dir() {
                    segments(&log, prefix, &mut sum, emit)?;
                }
            }
            Kind::SegmentDir => segments(path, prefix, &mut sum, emit)?,
            Kind::Segment => segment(path, false, prefix, &mut sum, emit)?,
            Kind::Snapshot => snapshot(path, prefix, &mut sum, emit)?,
            Kind::PyFile => pyfile(path, prefix, &mut sum, emit)?,
        }
    }
    Ok(sum)
}
