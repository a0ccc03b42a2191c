//! Writes the seed inputs of every fuzz target into `fuzz/corpus/<target>/`
//! (valid examples of each format, made by the same code the node uses).
//! libFuzzer grows the corpus from there; `cargo fuzz cmin` shrinks it
//! again before it is committed. See docs/reliability.md.
//!
//! `cargo run -p distkv-fuzz --example seed_corpus`

use std::path::{Path, PathBuf};
use std::sync::Arc;

use distkv_core::cluster::actor::ActorMsg;
use distkv_core::cluster::msg::{Info, Update};
use distkv_core::state::State;
use distkv_log::writer::{FsyncPolicy, LogWriter, Now, WriterConfig};
use distkv_log::{LogRecord, RecoveryMode, SegmentReader};
use distkv_model::{codec, path, Chain, NodeName, NodeSet, RangeSet, UpdateEvent, Value};

fn save(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus directory");
    std::fs::write(dir.join(name), bytes).expect("corpus file");
}

fn event(node: &str, tick: u64, value: Option<Value>) -> UpdateEvent {
    UpdateEvent {
        path: path!["seed", tick, "x"],
        chain: Chain::attach(
            NodeName::from(node),
            tick,
            Some(&Chain::single(NodeName::from("other"), 3)),
        ),
        value,
        tock: tick * 2,
    }
}

fn values() -> Vec<Value> {
    vec![
        Value::Nil,
        Value::Int(-5),
        Value::uint(u64::MAX),
        Value::Float(1.5),
        Value::str("text"),
        Value::Bin(Arc::from(&b"\x00\xff"[..])),
        Value::BigUint(Arc::from(&[1u8, 0, 0, 0, 0, 0, 0, 0, 0][..])),
        Value::Array(vec![Value::Int(1), Value::Array(vec![Value::Nil])]),
        Value::map([("a", Value::Int(1)), ("b", Value::str("two"))]),
        Value::Path(path!["p", 1i64, Value::Nil]),
    ]
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");

    // Client requests, some pipelined in one stream (the first byte is the
    // read size the target cuts the stream into).
    let dir = root.join("client_frames");
    let mut stream = vec![7u8];
    for (i, v) in values().into_iter().enumerate() {
        let req = Value::map([
            ("seq", Value::uint(i as u64 + 1)),
            ("action", Value::str("set_value")),
            ("path", Value::Path(path!["k", i as u64])),
            ("value", v),
            ("nchain", Value::Int(2)),
        ]);
        let mut one = vec![255u8];
        codec::encode(&req, &mut one);
        save(&dir, &format!("set{i}"), &one);
        codec::encode(&req, &mut stream);
    }
    let update = event("n2", 9, Some(Value::Int(1))).to_value(-1);
    let mut one = vec![3u8];
    codec::encode(&update, &mut one);
    save(&dir, "update", &one);
    save(&dir, "pipelined", &stream);

    // An event-log segment with raw and compressed blocks and a state
    // record, and single records.
    let dir = root.join("log_segment");
    let tmp = std::env::temp_dir().join(format!("distkv-seed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let mut cfg = WriterConfig::new("n1");
    cfg.fsync = FsyncPolicy::Never;
    let mut w = LogWriter::open(&tmp, cfg.clone(), Now::at(1)).expect("log writer");
    for i in 1..=3u64 {
        w.append_event(10, &event("n1", i, Some(Value::Int(i as i64))))
            .expect("append");
        w.commit(Now::at(10)).expect("commit");
    }
    for i in 4..=60u64 {
        w.append_event(11, &event("n1", i, Some(Value::str(&"long ".repeat(20)))))
            .expect("append");
    }
    let mut known = NodeSet::default();
    known.insert(&NodeName::from("n2"), 5);
    w.append(&LogRecord::State {
        seq: 60,
        time_ms: 12,
        nodes: vec![(NodeName::from("n1"), Some(60))],
        known,
        deleted: NodeSet::default(),
        skipped: (61..70).collect::<RangeSet>(),
    })
    .expect("state record");
    w.commit(Now::at(12)).expect("commit");
    w.close(Now::at(13)).expect("close");
    for f in std::fs::read_dir(&tmp).expect("segments") {
        let f = f.expect("segment").path();
        save(&dir, "segment", &std::fs::read(&f).expect("segment bytes"));
    }
    let _ = std::fs::remove_dir_all(&tmp);
    // Salvage's paths: a block whose zstd frame has several blocks between
    // small ones, whole, with its length field damaged, and with runs of
    // damaged neighbours.
    let mut w = LogWriter::open(&tmp, cfg.clone(), Now::at(1)).expect("log writer");
    let commit = |w: &mut LogWriter, from: u64, n: u64| {
        for i in from..from + n {
            let text = format!("{i:08} {}", "abcdefghij".repeat((i % 13) as usize));
            w.append_event(10, &event("n1", i, Some(Value::str(&text))))
                .expect("append");
        }
        w.commit(Now::at(10)).expect("commit");
    };
    commit(&mut w, 1, 2);
    commit(&mut w, 3, 4000);
    for g in 0..8 {
        commit(&mut w, 4003 + g * 2, 2);
    }
    w.close(Now::at(13)).expect("close");
    for f in std::fs::read_dir(&tmp).expect("segments") {
        let f = f.expect("segment").path();
        let bytes = std::fs::read(&f).expect("segment bytes");
        save(&dir, "segment-big", &bytes);
        let mut blocks: Vec<usize> = SegmentReader::open(&f, RecoveryMode::Strict)
            .expect("segment")
            .map(|r| r.expect("record").offset as usize)
            .collect();
        blocks.dedup();
        let mut length = bytes.clone();
        length[blocks[1] + 2] ^= 0x01;
        save(&dir, "segment-big-length", &length);
        let mut runs = bytes.clone();
        for &b in &blocks[2..blocks.len() - 1] {
            if b % 3 != 0 {
                runs[b + 12] ^= 0x20;
            }
        }
        runs[blocks[1] + 20] ^= 0x20;
        save(&dir, "segment-runs", &runs);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let mut rec = Vec::new();
    LogRecord::Event {
        seq: 1,
        time_ms: 2,
        event: event("n1", 1, None),
    }
    .encode(&mut rec);
    save(&dir, "record", &rec);

    // A snapshot of a small state with a deletion and the meta tree.
    let dir = root.join("snapshot_file");
    let mut st = State::new("n1", Default::default());
    st.make_ready();
    for (i, v) in values().into_iter().enumerate() {
        st.local_change(&path!["s", i as u64], Some(v))
            .expect("change");
    }
    st.local_change(&path!["s", 0u64], None).expect("deletion");
    st.local_change(&path![Value::Nil, "meta"], Some(Value::Int(1)))
        .expect("meta change");
    let file = std::env::temp_dir().join(format!("distkv-seed-{}.dkvsnap", std::process::id()));
    distkv_core::persist::snap::write(&st, &file, true, 5, 12)
        .expect("snapshot")
        .finish()
        .expect("snapshot written");
    save(
        &dir,
        "snapshot",
        &std::fs::read(&file).expect("snapshot bytes"),
    );
    let _ = std::fs::remove_file(&file);

    // Cluster messages on each topic (first byte: the topic).
    let dir = root.join("bus_message");
    let u = Update {
        node: "n2".into(),
        events: vec![event("n2", 4, Some(Value::Int(4))), event("n2", 5, None)],
    };
    save(&dir, "update", &[[0u8].as_slice(), &u.encode()].concat());
    let mut i = Info::new("n2".into(), Some(5));
    i.ticks = vec![("n1".into(), 3), ("n2".into(), 5)];
    i.missing.insert(&NodeName::from("n1"), 2);
    i.known.insert(&NodeName::from("n2"), 1);
    i.deleted.insert(&NodeName::from("n2"), 2);
    i.node_drop = vec!["n9".into()];
    i.skipped = (6..9).collect();
    i.addr = Some("[::1]:27586".into());
    save(&dir, "info", &[[1u8].as_slice(), &i.encode()].concat());
    let ping = ActorMsg::Ping {
        node: "n2".into(),
        value: Some((10, 5)),
        history: vec!["n2".into(), "n1".into()],
    };
    let ping = codec::to_vec(&ping.to_value());
    save(&dir, "ping", &[[2u8].as_slice(), &ping].concat());
    save(&dir, "del", &[[3u8].as_slice(), &ping].concat());

    // Path texts and expressions.
    let dir = root.join("path_syntax");
    for (i, text) in [
        "a.x:_y.b",
        ":1:.23.c",
        ":1,'a:_b',2.c",
        "a:y616299",
        ":n.auth",
        ":",
        "a:e.b",
        ":x1f",
        ":(1,(2,3)),:t,:f",
        "12*3-(4//3)**2",
        "b'ab' + b'c'",
        "'x' * 3",
    ]
    .into_iter()
    .enumerate()
    {
        save(&dir, &format!("text{i}"), text.as_bytes());
    }
    println!("seed corpus written to {}", root.display());
}
