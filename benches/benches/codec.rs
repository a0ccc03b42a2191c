//! The internal formats' codec: serde derive + rmp-serde (production since
//! the move, `distkv_model::serial`) on the record every change is written
//! as (an event-log record holding an update event, the same bytes as the
//! event in a server-to-server `update` message), against the hand-written
//! client-protocol codec going through a `Value` tree (what the log used
//! before the move for decoding, and what a client's `update` still takes).
//!
//! `cargo bench -p distkv-benches --bench codec`
//!
//! The bench first checks that both sides write identical bytes. The
//! value-tree side builds the record's `Value` (with the event's wire form)
//! and encodes it; it decodes to a `Value` under the internal limits and
//! reads the event with `UpdateEvent::from_value`. docs/perf.md records
//! the figures, before and after the move.
//!
//! Two more encode the same events from the records of an in-memory event
//! log, as a node's file writer (`encode/from_the_event_log`) and its
//! broadcast (`encode/update_messages_from_the_event_log`) do: each record
//! writes its event's bytes by hand (`LogEntry::encode`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use distkv_benches::remote_events;
use distkv_log::record::encode_event;
use distkv_log::{EventLog, LogLimits, LogRecord};
use distkv_model::budget::INTERNAL_LIMITS;
use distkv_model::{codec, UpdateEvent, Value};
use distkv_node::cluster::msg::UpdateEncoder;

/// The record as a value tree: `{t: "e", seq, ms, ev}`.
fn record_value(seq: u64, ms: u64, ev: &UpdateEvent) -> Value {
    Value::map([
        ("t", Value::str("e")),
        ("seq", Value::uint(seq)),
        ("ms", Value::uint(ms)),
        ("ev", ev.to_value(-1)),
    ])
}

/// Reads an event record through the value tree.
fn decode_value_tree(bytes: &[u8]) -> u64 {
    let v = codec::decode_with(bytes, INTERNAL_LIMITS).expect("decodes");
    let ev = UpdateEvent::from_value(v.get("ev").expect("an event record")).expect("an event");
    ev.tock
}

fn codec_bench(c: &mut Criterion) {
    const N: usize = 100_000;
    let events: Vec<UpdateEvent> = remote_events(N, 10_000, 3, 7);
    let ms = |i: usize| 1_700_000_000_000 + i as u64 + 1;

    // The same format: identical bytes, so the race is fair.
    let encoded: Vec<Vec<u8>> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut ours = Vec::new();
            encode_event(i as u64 + 1, ms(i), e, &mut ours);
            let tree = codec::to_vec(&record_value(i as u64 + 1, ms(i), e));
            assert_eq!(ours, tree, "record {i} differs between the codecs");
            ours
        })
        .collect();

    let mut g = c.benchmark_group("log_record");
    g.sample_size(20);
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("encode/serde", |b| {
        let mut buf = Vec::with_capacity(64 << 20);
        b.iter(|| {
            buf.clear();
            for (i, e) in events.iter().enumerate() {
                encode_event(i as u64 + 1, ms(i), e, &mut buf);
            }
            buf.len()
        })
    });
    // As the node's file writer and broadcast write them: from the
    // in-memory event log's records.
    let mut log = EventLog::new(LogLimits {
        max_records: N,
        max_bytes: usize::MAX,
    });
    for e in &events {
        log.push(e);
    }
    let entries = || log.read(1, N).expect("the log holds them");
    g.bench_function("encode/from_the_event_log", |b| {
        let mut buf = Vec::with_capacity(64 << 20);
        b.iter(|| {
            buf.clear();
            for (seq, e) in entries() {
                encode_event(seq, ms(seq as usize), &e, &mut buf);
            }
            buf.len()
        })
    });
    g.bench_function("encode/update_messages_from_the_event_log", |b| {
        let mut enc = UpdateEncoder::default();
        b.iter(|| enc.encode("node0", entries().map(|(_, e)| e)).len())
    });
    g.bench_function("encode/value-tree", |b| {
        let mut buf = Vec::with_capacity(64 << 20);
        b.iter(|| {
            buf.clear();
            for (i, e) in events.iter().enumerate() {
                codec::encode(&record_value(i as u64 + 1, ms(i), e), &mut buf);
            }
            buf.len()
        })
    });
    g.bench_function("decode/serde", |b| {
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
    g.bench_function("decode/value-tree", |b| {
        b.iter(|| {
            encoded
                .iter()
                .map(|bytes| decode_value_tree(bytes))
                .sum::<u64>()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // The allocator as every distkv program tunes it.
    config = { distkv_benches::heap::tune(); Criterion::default() };
    targets = codec_bench
}
criterion_main!(benches);
