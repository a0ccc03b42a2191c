//! The internal formats' codec: our hand-written msgpack codec against
//! serde derive + rmp-serde, on the record every change is written as
//! (an event-log record holding an update event, the same bytes as the
//! event in a server-to-server `update` message).
//!
//! `cargo bench -p distkv-benches --bench codec`
//!
//! The serde side gets the easier job: its structs mirror the record with
//! `rmpv::Value` for the path and the value (no conversion to the state
//! machine's types, no budget checks), and the bench first checks that
//! both sides write identical bytes. docs/perf.md records the figures and
//! the decision they support.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use distkv_benches::remote_events;
use distkv_log::record::encode_event;
use distkv_log::LogRecord;
use distkv_model::{codec, Chain, UpdateEvent, Value};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct SRecord {
    t: String,
    seq: u64,
    ms: u64,
    ev: SEvent,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct SEvent {
    node: String,
    tick: u64,
    prev: Option<Box<SLink>>,
    path: rmpv::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<rmpv::Value>,
    tock: u64,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct SLink {
    node: String,
    tick: u64,
    prev: Option<Box<SLink>>,
}

/// Our value as rmpv's, through its msgpack bytes (setup only).
fn rmpv_of(v: &Value) -> rmpv::Value {
    let mut buf = Vec::new();
    codec::encode(v, &mut buf);
    rmpv::decode::read_value(&mut &buf[..]).expect("valid msgpack")
}

fn links(chain: &Chain) -> Option<Box<SLink>> {
    chain.links().iter().rev().fold(None, |prev, l| {
        Some(Box::new(SLink {
            node: l.node.to_string(),
            tick: l.tick,
            prev,
        }))
    })
}

fn mirror(seq: u64, ev: &UpdateEvent) -> SRecord {
    let head = links(&ev.chain).expect("a chain is never empty");
    SRecord {
        t: "e".into(),
        seq,
        ms: 1_700_000_000_000 + seq,
        ev: SEvent {
            node: head.node,
            tick: head.tick,
            prev: head.prev,
            path: rmpv_of(&Value::Path(ev.path.clone())),
            value: ev.value.as_ref().map(rmpv_of),
            tock: ev.tock,
        },
    }
}

fn codec_bench(c: &mut Criterion) {
    const N: usize = 100_000;
    let events: Vec<UpdateEvent> = remote_events(N, 10_000, 3, 7);
    let mirrors: Vec<SRecord> = events
        .iter()
        .enumerate()
        .map(|(i, e)| mirror(i as u64 + 1, e))
        .collect();

    // The same format: identical bytes, so the race is fair.
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for (i, (e, m)) in events.iter().zip(&mirrors).enumerate() {
        ours.clear();
        encode_event(i as u64 + 1, m.ms, e, &mut ours);
        theirs.clear();
        rmp_serde::encode::write_named(&mut theirs, m).expect("encodes");
        assert_eq!(ours, theirs, "record {i} differs between the codecs");
    }
    let encoded: Vec<Vec<u8>> = events
        .iter()
        .zip(&mirrors)
        .enumerate()
        .map(|(i, (e, m))| {
            let mut b = Vec::new();
            encode_event(i as u64 + 1, m.ms, e, &mut b);
            b
        })
        .collect();

    let mut g = c.benchmark_group("log_record");
    g.sample_size(20);
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("encode/hand-written", |b| {
        let mut buf = Vec::with_capacity(64 << 20);
        b.iter(|| {
            buf.clear();
            for (i, (e, m)) in events.iter().zip(&mirrors).enumerate() {
                encode_event(i as u64 + 1, m.ms, e, &mut buf);
            }
            buf.len()
        })
    });
    g.bench_function("encode/rmp-serde", |b| {
        let mut buf = Vec::with_capacity(64 << 20);
        b.iter(|| {
            buf.clear();
            for m in &mirrors {
                rmp_serde::encode::write_named(&mut buf, m).expect("encodes");
            }
            buf.len()
        })
    });
    g.bench_function("decode/hand-written", |b| {
        b.iter(|| {
            encoded
                .iter()
                .map(|bytes| match LogRecord::decode(bytes).expect("decodes") {
                    LogRecord::Event { event, .. } => event.tock,
                    _ => unreachable!("only events were written"),
                })
                .sum::<u64>()
        })
    });
    g.bench_function("decode/rmp-serde", |b| {
        b.iter(|| {
            encoded
                .iter()
                .map(|bytes| {
                    rmp_serde::from_slice::<SRecord>(bytes)
                        .expect("decodes")
                        .seq
                })
                .sum::<u64>()
        })
    });
    g.finish();
}

criterion_group!(benches, codec_bench);
criterion_main!(benches);
