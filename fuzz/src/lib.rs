//! Fuzz targets: every decoder of input a node does not control.
//!
//! Each target takes arbitrary bytes and drives one decoder the way the
//! node does; it must never panic, hang or allocate without bound, and
//! what it accepts must survive a round trip where the format has one.
//! The bodies live here, in an ordinary library, so that the same code
//! runs under libFuzzer (`fuzz/harness`, see docs/reliability.md) and as
//! a plain test that replays the committed corpus (`fuzz/tests/corpus.rs`,
//! part of `cargo test --workspace`).
//!
//! * [`client_frames`] — the client protocol: frames found by the
//!   resumable scanner in a stream cut at arbitrary points, decoded with a
//!   node's limits, then read as a change where they look like one;
//! * [`log_segment`] — an event-log segment file, read in every recovery
//!   mode, and single log records;
//! * [`snapshot_file`] — a snapshot file, read item by item;
//! * [`bus_message`] — a cluster message on any topic, handled by a node's
//!   replication core;
//! * [`path_syntax`] — DistKV's path text syntax and expression
//!   evaluator.

#![warn(missing_docs)]

use std::path::PathBuf;

use distkv_client::raw::{self, FieldSpans};
use distkv_core::cluster::core::{ClusterConfig, Core};
use distkv_core::cluster::msg::{Info, Update, BUS_LIMITS};
use distkv_core::state::{State, MAX_TICK_LEAP};
use distkv_log::writer::RecoveryMode;
use distkv_log::{LogRecord, SegmentReader};
use distkv_model::codec::{self, FrameScanner, Limits};
use distkv_model::{pathfmt, UpdateEvent};
use distkv_snapshot::SnapshotReader;

/// A fuzz target.
pub type Target = fn(&[u8]);

/// The targets by name, as the harness and the corpus directories call
/// them.
pub const TARGETS: [(&str, Target); 5] = [
    ("client_frames", client_frames),
    ("log_segment", log_segment),
    ("snapshot_file", snapshot_file),
    ("bus_message", bus_message),
    ("path_syntax", path_syntax),
];

/// The client protocol. The first byte says where to cut the stream into
/// reads; every complete frame is decoded with a node's default limits.
pub fn client_frames(data: &[u8]) {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let limits = Limits::default();
    let step = usize::from(cut).max(1);
    let mut scanner = FrameScanner::new(limits);
    let mut start = 0;
    let mut seen = 0;
    while start < stream.len() {
        seen = (seen + step).min(stream.len());
        let frame = match scanner.scan(&stream[start..seen]) {
            Ok(Some(n)) => n,
            Ok(None) if seen < stream.len() => continue,
            Ok(None) | Err(_) => return,
        };
        let bytes = &stream[start..start + frame];
        if let Ok(v) = codec::decode_with(bytes, limits) {
            // What decodes re-encodes to bytes that decode the same.
            let again = codec::to_vec(&v);
            let back = codec::decode_with(&again, limits).expect("re-encoded frame decodes");
            assert_eq!(codec::to_vec(&back), again, "round trip changed the value");
            assert_eq!(codec::encoded_len(&v), again.len());
            // Requests carry changes (`update`) and paths.
            let _ = UpdateEvent::from_value(&v);
        }
        read_in_place_as_decoded(bytes, limits);
        start += frame;
        seen = start;
        scanner.reset();
    }
}

/// A node reads a request's fields in place (`FieldSpans`) before, or
/// instead of, decoding it: the reader accepts exactly what the decoder
/// accepts, and finds the fields the decoded message holds.
fn read_in_place_as_decoded(bytes: &[u8], limits: Limits) {
    const KEYS: [&[u8]; 4] = [b"seq", b"action", b"path", b"value"];
    match (
        codec::decode_with(bytes, limits),
        FieldSpans::parse_keys(bytes, limits, &KEYS),
    ) {
        (Ok(v), Ok((spans, n))) => {
            assert_eq!(n, bytes.len(), "the in-place reader took another length");
            for (i, key) in KEYS.iter().enumerate() {
                let key = std::str::from_utf8(key).expect("ASCII keys");
                let want = v.get(key).map(codec::to_vec);
                let got = spans
                    .get(bytes, i)
                    .map(|b| codec::to_vec(&raw::decode_field(b)));
                assert_eq!(got, want, "field {key} read in place");
            }
        }
        (Err(_), Err(_)) => {}
        (d, r) => panic!(
            "the decoder says {:?}, the in-place reader {:?}",
            d.err(),
            r.err()
        ),
    }
}

/// A scratch file for targets that read files: in the RAM disk where
/// there is one, one per process.
fn scratch(name: &str) -> PathBuf {
    let base = ["/dev/shm", "/tmp"]
        .into_iter()
        .map(PathBuf::from)
        .find(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("distkv-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir.join(name)
}

/// An event-log segment file, read strictly and with tail recovery, and
/// the bytes as one log record (by both roads, to the same record).
pub fn log_segment(data: &[u8]) {
    let record = LogRecord::decode(data);
    assert_eq!(
        record.as_ref().ok(),
        LogRecord::decode_general(data).as_ref().ok(),
        "the fast road decodes a record as the general one"
    );
    if let Ok(r) = record {
        let mut out = Vec::new();
        r.encode(&mut out);
        assert_eq!(
            LogRecord::decode(&out).as_ref(),
            Ok(&r),
            "record round trip"
        );
    }
    let path = scratch("00000000000000000001.dkvlog");
    std::fs::write(&path, data).expect("write scratch segment");
    for mode in [
        RecoveryMode::Strict,
        RecoveryMode::TruncateTail,
        RecoveryMode::Salvage,
    ] {
        if let Ok(reader) = SegmentReader::open(&path, mode) {
            for rec in reader.take(1 << 20) {
                if rec.is_err() {
                    break;
                }
            }
        }
    }
}

/// A snapshot file, read to its end.
pub fn snapshot_file(data: &[u8]) {
    let path = scratch("fuzz.dkvsnap");
    std::fs::write(&path, data).expect("write scratch snapshot");
    if let Ok(reader) = SnapshotReader::open(&path) {
        for item in reader.take(1 << 20) {
            if item.is_err() {
                break;
            }
        }
    }
    let _ = SnapshotReader::verify(&path);
}

/// A cluster message. The first byte picks the topic; a node's core
/// handles the rest as that topic's payload, then runs its timers. An
/// update decodes the same by both roads.
pub fn bus_message(data: &[u8]) {
    let Some((&which, payload)) = data.split_first() else {
        return;
    };
    assert_eq!(
        Update::decode(payload).ok(),
        Update::decode_general(payload).ok(),
        "the fast road decodes an update as the general one"
    );
    let _ = Info::decode(payload);
    let _ = codec::decode_with(payload, BUS_LIMITS);
    let mut st = State::new("fuzz", Default::default());
    st.make_ready();
    let mut core = Core::new(&st, ClusterConfig::default(), 1, None);
    core.start(&mut st, 0);
    let t = core.topics().clone();
    let topic = match which % 5 {
        0 => &t.update,
        1 => &t.info,
        2 => &t.ping,
        3 => &t.del,
        _ => &t.root,
    };
    core.receive(&mut st, 1, topic, payload);
    core.poll(&mut st, 2);
    core.poll(&mut st, 60_000);
    let _ = core.take_outgoing();
    // No message raises this node's own counter beyond the leap a peer may
    // report (this node may run from an old copy of its files).
    assert!(
        st.tick().unwrap_or(0) <= MAX_TICK_LEAP,
        "a message moved this node's tick to {:?}",
        st.tick()
    );
}

/// DistKV's path syntax and expression evaluator. What parses formats
/// back to the same path, except where the format is Python's lossy one
/// ([`pathfmt::formats_losslessly`]), which is only formatted.
pub fn path_syntax(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = pathfmt::parse(text) {
        if !pathfmt::formats_losslessly(&p) {
            let _ = pathfmt::format(&p);
            return;
        }
        let again = pathfmt::format(&p);
        let back = pathfmt::parse(&again).expect("a formatted path parses");
        assert_eq!(
            codec::to_vec(&distkv_model::Value::Path(back)),
            codec::to_vec(&distkv_model::Value::Path(p)),
            "{text:?} formats as {again:?}, which parses differently"
        );
    }
    let _ = pathfmt::eval(text);
}
