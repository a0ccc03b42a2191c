//! Scenario tests: writer and reader together, on real files.

use std::error::Error;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use distkv_model::chain::MAX_COUNTER;
use distkv_model::{codec, Chain, Link, NodeName, Path, RangeSet, SharedStr, Value};
use proptest::prelude::*;

use crate::block::{block_crc, encode_block_header, BLOCK_HEADER_LEN};
use crate::sample::{distkv_save_format, small_entries};
use crate::writer::BLOCKS_AHEAD;
use crate::{
    temp_path, EntryRecord, Item, ItemRef, NodeRecord, SnapshotError, SnapshotHeader, SnapshotInfo,
    SnapshotReader, SnapshotWriter, WriteOptions,
};

type TestResult<T = ()> = Result<T, Box<dyn Error>>;

fn header() -> SnapshotHeader {
    SnapshotHeader {
        node: NodeName::from("n1"),
        seq: 1234,
        created_ms: 1_700_000_000_123,
        tock: 987,
    }
}

fn node(name: &str, tick: Option<u64>, known: &[(u64, u64)], deleted: &[u64]) -> NodeRecord {
    let mut k = RangeSet::new();
    for &(a, b) in known {
        k.insert_range(a, b);
    }
    NodeRecord {
        name: NodeName::from(name),
        tick,
        known: k,
        deleted: deleted.iter().copied().collect(),
    }
}

fn chain(links: &[(&str, u64)]) -> Option<Chain> {
    Chain::from_links(
        links
            .iter()
            .map(|&(n, tick)| Link {
                node: NodeName::from(n),
                tick,
            })
            .collect(),
    )
}

fn entry(path: Vec<Value>, value: Option<Value>, chain: Option<Chain>, tock: u64) -> EntryRecord {
    EntryRecord {
        path: Path::new(path),
        value,
        chain,
        tock,
    }
}

fn write(
    path: &FsPath,
    nodes: &[NodeRecord],
    entries: &[EntryRecord],
    options: WriteOptions,
) -> TestResult<SnapshotInfo> {
    let mut w = SnapshotWriter::create_with(path, &header(), options)?;
    for n in nodes {
        w.write_item(&Item::Node(n.clone()))?;
    }
    for e in entries {
        w.write_entry(&e.path, e.value.as_ref(), e.chain.as_ref(), e.tock)?;
    }
    Ok(w.finish()?)
}

fn read_all(path: &FsPath) -> TestResult<(SnapshotHeader, Vec<Item>)> {
    let mut r = SnapshotReader::open(path)?;
    let items = r.by_ref().collect::<Result<Vec<_>, _>>()?;
    assert!(r.is_complete());
    Ok((r.header().clone(), items))
}

/// Byte-exact comparison: `Value`'s `==` is Python's (`1 == 1.0`).
fn assert_same_entry(got: &Item, want: &EntryRecord) {
    let Item::Entry(g) = got else {
        panic!("expected an entry, got {got:?}");
    };
    let bytes = |v: &Value| codec::to_vec(v);
    assert_eq!(
        bytes(&Value::Path(g.path.clone())),
        bytes(&Value::Path(want.path.clone())),
        "path of {want:?}"
    );
    assert_eq!(
        g.value.as_ref().map(bytes),
        want.value.as_ref().map(bytes),
        "value of {want:?}"
    );
    assert_eq!(g.chain, want.chain, "chain of {want:?}");
    assert_eq!(g.tock, want.tock);
}

fn assert_round_trip(got: &[Item], nodes: &[NodeRecord], entries: &[EntryRecord]) {
    assert_eq!(got.len(), nodes.len() + entries.len());
    for (g, n) in got.iter().zip(nodes) {
        assert_eq!(g, &Item::Node(n.clone()));
    }
    for (g, e) in got[nodes.len()..].iter().zip(entries) {
        assert_same_entry(g, e);
    }
}

fn every_value_type() -> Vec<Value> {
    vec![
        Value::Nil,
        Value::Bool(true),
        Value::Bool(false),
        Value::Int(0),
        Value::Int(-1),
        Value::Int(i64::MIN),
        Value::Int(1 << 40),
        Value::UInt(u64::MAX),
        Value::BigUint(Arc::from(&[1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10][..])),
        Value::Float(1.5),
        Value::Float(-0.0),
        Value::Float(f64::NAN),
        Value::Float(f64::INFINITY),
        Value::str(""),
        Value::str("héllo wörld"),
        Value::Bin(Arc::from(&b"\x00\xff bytes"[..])),
        Value::Array(vec![Value::Int(1), Value::str("x"), Value::Array(vec![])]),
        Value::Map(vec![
            (Value::str("a"), Value::Int(1)),
            (Value::Int(2), Value::Array(vec![Value::Nil])),
            (Value::Array(vec![Value::Bool(true)]), Value::Float(2.0)),
        ]),
        Value::Path(distkv_model::path!["x", 1i64, true]),
        Value::Ext(42, Arc::from(&b"opaque"[..])),
        Value::str(&"long ".repeat(10_000)),
    ]
}

fn sample_state() -> (Vec<NodeRecord>, Vec<EntryRecord>) {
    let nodes = vec![
        node("n1", Some(5000), &[(1, 3), (10, 20)], &[4, 7]),
        node("n2", None, &[], &[]),
        node("n3", Some(1), &[], &[(1 << 40)]),
    ];
    let mut entries = vec![
        // The root, data-less but with a chain.
        entry(vec![], None, chain(&[("n1", 1)]), 1),
        entry(
            vec![Value::str("a")],
            Some(Value::Int(1)),
            chain(&[("n1", 2)]),
            2,
        ),
    ];
    for (i, v) in every_value_type().into_iter().enumerate() {
        entries.push(entry(
            vec![Value::str("a"), Value::str("types"), Value::uint(i as u64)],
            Some(v),
            chain(&[("n2", 10 + i as u64), ("n1", 3)]),
            100 + i as u64,
        ));
    }
    // A tombstone, an entry without chain, elements equal in Python but of
    // different types (must not be merged by path shortening).
    entries.push(entry(
        vec![Value::str("a"), Value::str("gone")],
        None,
        chain(&[("n3", 1), ("n1", 4)]),
        200,
    ));
    entries.push(entry(vec![Value::str("b")], Some(Value::Nil), None, 201));
    for el in [Value::Int(1), Value::Float(1.0), Value::Bool(true)] {
        entries.push(entry(
            vec![Value::str("b"), el, Value::str("leaf")],
            Some(Value::Int(7)),
            chain(&[("n1", 300)]),
            MAX_COUNTER,
        ));
    }
    // A long chain, partly of nodes without node items.
    let names: Vec<String> = (0..500).map(|i| format!("node-{i}")).collect();
    let mut links: Vec<(&str, u64)> = vec![("n1", 4999), ("n2", 77)];
    links.extend(names.iter().map(|n| (n.as_str(), 3)));
    entries.push(entry(
        vec![Value::str("c"), Value::Bin(Arc::from(&b"\x00"[..]))],
        Some(Value::str("long chain")),
        chain(&links),
        400,
    ));
    (nodes, entries)
}

#[test]
fn round_trip_keeps_nodes_entries_tombstones_and_long_chains() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("snap");
    let (nodes, entries) = sample_state();
    let info = write(&path, &nodes, &entries, WriteOptions::default())?;
    assert_eq!(info.nodes, 3);
    assert_eq!(info.entries, entries.len() as u64);
    assert_eq!(info.bytes, std::fs::metadata(&path)?.len());
    let (h, items) = read_all(&path)?;
    assert_eq!(h, header());
    assert_round_trip(&items, &nodes, &entries);
    assert_eq!(SnapshotReader::verify(&path)?, info);
    // Lent, each path is the one written.
    let mut r = SnapshotReader::open(&path)?;
    let mut lent = 0;
    while let Some(item) = r.next_ref() {
        if let ItemRef::Entry(e) = item? {
            assert_same_entry(&ItemRef::Entry(e).to_item(), &entries[lent]);
            lent += 1;
        }
    }
    assert_eq!(lent, entries.len());
    assert!(r.is_complete());
    Ok(())
}

/// Skimmed, entries give each value as the bytes the file holds — the
/// writer's are the codec's — which `to_item` decodes again; an entry off
/// the writer's layout (a chain naming nodes without node items) comes
/// decoded. Bytes in another encoding than the codec's stay as they are.
/// Node items come without their tick sets.
#[test]
fn skimmed_values_are_the_bytes_the_file_holds() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("snap");
    let (nodes, entries) = sample_state();
    write(&path, &nodes, &entries, WriteOptions::default())?;
    let mut r = SnapshotReader::open(&path)?;
    let (mut n, mut encoded, mut decoded) = (0, 0, 0);
    let mut skimmed_nodes = Vec::new();
    while let Some(item) = r.next_skimmed() {
        let e = match item? {
            ItemRef::Node(node) => {
                skimmed_nodes.push(node);
                continue;
            }
            ItemRef::Entry(e) => e,
        };
        let want = &entries[n];
        n += 1;
        match (e.encoded, &e.value, &want.value) {
            (Some(b), None, Some(v)) => {
                assert_eq!(b, codec::to_vec(v), "{want:?}");
                encoded += 1;
            }
            (None, Some(_), Some(_)) => decoded += 1,
            (None, None, None) => {}
            (b, v, _) => panic!("{b:?} and {v:?} for {want:?}"),
        }
        assert_same_entry(&ItemRef::Entry(e).to_item(), want);
    }
    assert!(r.is_complete());
    assert_eq!(n, entries.len());
    // Only the long chain's entry names nodes without node items.
    assert_eq!((encoded, decoded), (entries.len() - 3, 1));
    let bare: Vec<NodeRecord> = nodes
        .iter()
        .map(|n| NodeRecord {
            known: RangeSet::new(),
            deleted: RangeSet::new(),
            ..n.clone()
        })
        .collect();
    assert_eq!(skimmed_nodes, bare);
    assert!(nodes.iter().any(|n| !n.known.is_empty()));
    // 5 written as a signed byte, where the codec writes a fixint.
    let node = codec::to_vec(&Value::Array(vec![
        Value::Int(0),
        Value::str("n1"),
        Value::Nil,
        Value::Array(vec![]),
        Value::Array(vec![]),
    ]));
    let entry = vec![0x96, 0x01, 0x00, 0x91, 0xa1, b'a', 0xc0, 0x03, 0xd0, 0x05];
    let end = codec::to_vec(&ints(&[2, 1, 1]));
    craft_bytes(&path, &[node, entry, end], None)?;
    let mut r = SnapshotReader::open(&path)?;
    let entry = |item: Option<Result<ItemRef<'_>, SnapshotError>>| match item {
        Some(Ok(ItemRef::Entry(e))) => Ok((e.value, e.encoded.map(<[u8]>::to_vec))),
        other => Err(format!("expected an entry, got {other:?}")),
    };
    assert!(matches!(r.next_skimmed(), Some(Ok(ItemRef::Node(_)))));
    assert_eq!(entry(r.next_skimmed())?, (None, Some(vec![0xd0, 0x05])));
    assert!(r.next_skimmed().is_none() && r.is_complete());
    let mut r = SnapshotReader::open(&path)?;
    r.next_ref();
    assert_eq!(entry(r.next_ref())?, (Some(Value::Int(5)), None));
    Ok(())
}

#[test]
fn after_share_anew_chains_name_their_nodes_by_new_copies() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("snap");
    let (nodes, entries) = sample_state();
    write(&path, &nodes, &entries, WriteOptions::default())?;
    // Each entry's chain's first name, and whether it is the one before.
    let mut r = SnapshotReader::open(&path)?;
    let mut names: Vec<NodeName> = Vec::new();
    let mut read = 0;
    while let Some(item) = r.next_ref() {
        let ItemRef::Entry(e) = item? else { continue };
        assert_same_entry(&ItemRef::Entry(e.clone()).to_item(), &entries[read]);
        read += 1;
        if let Some(c) = &e.chain {
            names.push(c.head().node.clone());
        }
        if names.len() == 2 {
            r.share_anew();
        }
    }
    assert_eq!(read, entries.len());
    let same = |a: &NodeName, b: &NodeName| SharedStr::ptr_eq(a, b);
    let first = &names[0];
    let again = names
        .iter()
        .skip(2)
        .find(|n| **n == *first)
        .expect("a name again");
    assert!(!same(first, again), "a new copy after share_anew");
    assert!(names
        .iter()
        .skip(2)
        .filter(|n| **n == *again)
        .all(|n| same(n, again)));
    Ok(())
}

#[test]
fn empty_snapshot_round_trips() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("snap");
    let info = write(&path, &[], &[], WriteOptions::default())?;
    assert_eq!((info.nodes, info.entries, info.blocks), (0, 0, 1));
    let (h, items) = read_all(&path)?;
    assert_eq!(h, header());
    assert!(items.is_empty());
    Ok(())
}

#[test]
fn ten_thousand_entries_stream_across_many_blocks() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("snap");
    let entries: Vec<EntryRecord> = small_entries(10_000, NodeName::from("n1"))
        .map(|mut e| {
            if e.tock % 7 == 0 {
                e.value = None;
            } else {
                e.value = Some(Value::str(&format!("value {} {}", e.tock, "x".repeat(20))));
            }
            e
        })
        .collect();
    let nodes = [node("n1", Some(10_000), &[], &[])];
    let options = WriteOptions {
        level: 3,
        block_size: 8 << 10,
    };
    let info = write(&path, &nodes, &entries, options)?;
    assert!(info.blocks > 20, "only {} blocks", info.blocks);
    let mut r = SnapshotReader::open(&path)?;
    let mut n = 0usize;
    for item in r.by_ref() {
        let item = item?;
        if n > 0 {
            assert_same_entry(&item, &entries[n - 1]);
        }
        n += 1;
    }
    assert_eq!(n, 10_001);
    assert_eq!(r.info(), info);
    // Chains refer to the node item: the reader shares one name.
    let mut r = SnapshotReader::open(&path)?;
    let (Some(Ok(Item::Node(n1))), Some(Ok(Item::Entry(e)))) = (r.next(), r.next()) else {
        panic!("expected a node then an entry");
    };
    let c = e.chain.ok_or("no chain")?;
    assert!(NodeName::ptr_eq(&n1.name, &c.head().node));
    Ok(())
}

/// A small snapshot of many small blocks, and where each region starts.
fn small_snapshot(dir: &FsPath) -> TestResult<(PathBuf, Vec<u8>, Vec<u64>)> {
    let path = dir.join("snap");
    let (nodes, _) = sample_state();
    let entries: Vec<EntryRecord> = small_entries(40, NodeName::from("n1")).collect();
    let options = WriteOptions {
        level: 3,
        block_size: 64,
    };
    let info = write(&path, &nodes, &entries, options)?;
    let bytes = std::fs::read(&path)?;
    // Region starts: the header at 0, then each block.
    let header_len = header().encode()?.len();
    let mut starts = vec![0u64];
    let mut at = header_len;
    while at < bytes.len() {
        starts.push(at as u64);
        let clen = u32::from_le_bytes(bytes[at..at + 4].try_into()?) as usize;
        at += BLOCK_HEADER_LEN + clen;
    }
    assert_eq!(at, bytes.len());
    assert_eq!(starts.len() as u64, 1 + info.blocks);
    assert!(info.blocks >= 10, "only {} blocks", info.blocks);
    Ok((path, bytes, starts))
}

/// Reads everything; returns the items read before the error, and the error.
fn read_until_error(path: &FsPath) -> (usize, Option<SnapshotError>) {
    let mut r = match SnapshotReader::open(path) {
        Ok(r) => r,
        Err(e) => return (0, Some(e)),
    };
    let mut n = 0;
    for item in r.by_ref() {
        match item {
            Ok(_) => n += 1,
            Err(e) => return (n, Some(e)),
        }
    }
    (n, None)
}

#[test]
fn truncation_at_every_offset_is_reported_never_silently_short() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_, bytes, starts) = small_snapshot(dir.path())?;
    let cut_path = dir.path().join("cut");
    let total = 3 + 40;
    for cut in 0..bytes.len() {
        std::fs::write(&cut_path, &bytes[..cut])?;
        let (n, err) = read_until_error(&cut_path);
        assert!(n < total, "cut at {cut}: all {n} items read");
        match err {
            Some(SnapshotError::Truncated { offset, .. }) => {
                // The region that is cut (or missing) is named.
                let region = starts.iter().rev().find(|&&s| s <= cut as u64);
                assert!(
                    offset == cut as u64 || Some(&offset) == region,
                    "cut at {cut}: offset {offset}"
                );
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    Ok(())
}

#[test]
fn every_single_byte_flip_is_detected_at_its_block() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_, bytes, starts) = small_snapshot(dir.path())?;
    let bad_path = dir.path().join("bad");
    for i in 0..bytes.len() {
        let region = *starts
            .iter()
            .rev()
            .find(|&&s| s <= i as u64)
            .ok_or("no region")?;
        for mask in [0x01u8, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] ^= mask;
            std::fs::write(&bad_path, &b)?;
            let (_, err) = read_until_error(&bad_path);
            match err {
                Some(SnapshotError::Corrupt { offset, .. })
                | Some(SnapshotError::Truncated { offset, .. }) => {
                    assert_eq!(offset, region, "flip {mask:#x} at {i}");
                }
                other => panic!("flip {mask:#x} at {i}: {other:?}"),
            }
        }
    }
    Ok(())
}

#[test]
fn trailing_bytes_after_the_end_are_corruption() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (path, mut bytes, _) = small_snapshot(dir.path())?;
    bytes.extend_from_slice(&[0; 20]);
    std::fs::write(&path, &bytes)?;
    assert!(matches!(
        read_until_error(&path).1,
        Some(SnapshotError::Corrupt { .. })
    ));
    Ok(())
}

/// A file with `header()` and one block holding `items` (raw msgpack).
fn craft(path: &FsPath, items: &[Value], clen_override: Option<u32>) -> TestResult {
    let items: Vec<Vec<u8>> = items.iter().map(codec::to_vec).collect();
    craft_bytes(path, &items, clen_override)
}

/// [`craft`] of items given as their bytes.
fn craft_bytes(path: &FsPath, items: &[Vec<u8>], clen_override: Option<u32>) -> TestResult {
    let mut payload = Vec::new();
    for b in items {
        payload.extend_from_slice(&(b.len() as u32).to_le_bytes());
        payload.extend_from_slice(b);
    }
    let z = zstd::bulk::compress(&payload, 3)?;
    let (clen, ulen) = (
        clen_override.unwrap_or(z.len() as u32),
        payload.len() as u32,
    );
    let mut file = header().encode()?;
    file.extend_from_slice(&encode_block_header(clen, ulen, block_crc(clen, ulen, &z)));
    file.extend_from_slice(&z);
    std::fs::write(path, file)?;
    Ok(())
}

fn ints(v: &[i64]) -> Value {
    Value::Array(v.iter().map(|&i| Value::Int(i)).collect())
}

#[test]
fn well_checksummed_but_inconsistent_items_are_corruption() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("snap");
    let rs = Value::Array(vec![]);
    let node_item = |name: &str| {
        Value::Array(vec![
            Value::Int(0),
            Value::str(name),
            Value::Nil,
            rs.clone(),
            rs.clone(),
        ])
    };
    let entry_item = |depth: i64, chain: Value| {
        Value::Array(vec![
            Value::Int(1),
            Value::Int(depth),
            Value::Array(vec![Value::str("a")]),
            chain,
            Value::Int(1),
        ])
    };
    let cases: Vec<(&str, Vec<Value>)> = vec![
        ("end item counts", vec![ints(&[2, 1, 0])]),
        ("no end", vec![node_item("a")]),
        (
            "appears twice",
            vec![node_item("a"), node_item("a"), ints(&[2, 2, 0])],
        ),
        (
            "after the first entry",
            vec![entry_item(0, Value::Nil), node_item("a"), ints(&[2, 1, 1])],
        ),
        (
            "depth is not an integer up to",
            vec![entry_item(1, Value::Nil), ints(&[2, 0, 1])],
        ),
        (
            "does not exist",
            vec![entry_item(0, ints(&[3, 1])), ints(&[2, 0, 1])],
        ),
        (
            "not a positive even number",
            vec![entry_item(0, ints(&[0])), ints(&[2, 0, 1])],
        ),
        (
            "names node \"x\" twice",
            vec![
                entry_item(
                    0,
                    Value::Array(vec![
                        Value::str("x"),
                        Value::Int(1),
                        Value::str("x"),
                        Value::Int(2),
                    ]),
                ),
                ints(&[2, 0, 1]),
            ],
        ),
        (
            "chain tick is not a counter",
            vec![
                entry_item(
                    0,
                    Value::Array(vec![Value::str("x"), Value::uint(u64::MAX)]),
                ),
                ints(&[2, 0, 1]),
            ],
        ),
        ("unknown item tag 9", vec![ints(&[9]), ints(&[2, 0, 0])]),
        (
            "data after the end item",
            vec![ints(&[2, 0, 0]), ints(&[2, 0, 0])],
        ),
        ("item is not an array", vec![Value::Int(5)]),
    ];
    for (what, items) in cases {
        craft(&path, &items, None)?;
        match read_until_error(&path).1 {
            Some(SnapshotError::Corrupt { offset, reason, .. }) => {
                assert_eq!(offset, header().encode()?.len() as u64, "{what}");
                assert!(reason.contains(what), "{what}: {reason}");
            }
            // A snapshot without `End` is one cut at a block boundary.
            Some(SnapshotError::Truncated { .. }) if what == "no end" => {}
            other => panic!("{what}: {other:?}"),
        }
    }
    // A valid crafted file reads, so the cases above fail for their reason.
    craft(
        &path,
        &[
            node_item("a"),
            entry_item(0, ints(&[0, 1])),
            ints(&[2, 1, 1]),
        ],
        None,
    )?;
    assert_eq!(SnapshotReader::verify(&path)?.entries, 1);
    Ok(())
}

#[test]
fn hostile_block_lengths_are_refused_before_allocating() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("snap");
    craft(&path, &[ints(&[2, 0, 0])], Some(u32::MAX))?;
    assert!(matches!(
        read_until_error(&path).1,
        Some(SnapshotError::Corrupt { .. })
    ));
    craft(&path, &[ints(&[2, 0, 0])], Some(1 << 20))?;
    assert!(matches!(
        read_until_error(&path).1,
        Some(SnapshotError::Truncated { .. })
    ));
    Ok(())
}

#[test]
fn nothing_appears_under_the_final_name_before_finish() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("snap");
    // An older snapshot stays readable under the final name until the new
    // one replaces it whole.
    let old = write(
        &path,
        &[node("old", None, &[], &[])],
        &[],
        WriteOptions::default(),
    )?;
    let mut w = SnapshotWriter::create_with(
        &path,
        &SnapshotHeader {
            seq: 9999,
            ..header()
        },
        WriteOptions {
            level: 1,
            block_size: 1024,
        },
    )?;
    assert_eq!(w.temp_path(), temp_path(&path));
    for e in small_entries(5_000, NodeName::from("n1")) {
        w.write_entry(&e.path, e.value.as_ref(), e.chain.as_ref(), e.tock)?;
        if e.tock % 1000 == 0 {
            assert!(w.temp_path().exists());
            assert_eq!(SnapshotReader::verify(&path)?, old);
            assert_eq!(SnapshotReader::open(&path)?.header().seq, 1234);
        }
    }
    let info = w.finish()?;
    assert!(!temp_path(&path).exists());
    assert_eq!(SnapshotReader::verify(&path)?, info);
    assert_eq!(SnapshotReader::open(&path)?.header().seq, 9999);
    Ok(())
}

/// A sealed snapshot takes no more items and appears only on `finish`;
/// dropped instead, it leaves nothing behind.
#[test]
fn a_sealed_snapshot_takes_no_more_and_appears_on_finish() -> TestResult {
    let dir = tempfile::tempdir()?;
    let entries: Vec<_> = small_entries(3_000, NodeName::from("n1")).collect();
    let options = WriteOptions {
        level: 1,
        block_size: 1024,
    };
    for keep in [true, false] {
        let path = dir.path().join(format!("snap-{keep}"));
        let mut w = SnapshotWriter::create_with(&path, &header(), options)?;
        w.write_node("n1", Some(3_000), &RangeSet::new(), &RangeSet::new())?;
        for e in &entries {
            w.write_entry(&e.path, e.value.as_ref(), e.chain.as_ref(), e.tock)?;
        }
        w.seal()?;
        let e = &entries[0];
        let more = w.write_entry(&e.path, e.value.as_ref(), e.chain.as_ref(), e.tock);
        assert!(matches!(more, Err(SnapshotError::InvalidInput(_))));
        assert!(matches!(w.seal(), Err(SnapshotError::InvalidInput(_))));
        assert!(!path.exists() && temp_path(&path).exists());
        if keep {
            let info = w.finish()?;
            assert_eq!((info.nodes, info.entries), (1, 3_000));
            assert_eq!(SnapshotReader::verify(&path)?, info);
            let (_, items) = read_all(&path)?;
            assert_eq!(items.len(), 3_001);
        } else {
            drop(w);
        }
        assert!(!temp_path(&path).exists());
        assert_eq!(path.exists(), keep);
    }
    Ok(())
}

#[test]
fn dropping_an_unfinished_writer_leaves_no_files() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("snap");
    {
        let mut w = SnapshotWriter::create_with(
            &path,
            &header(),
            WriteOptions {
                level: 3,
                block_size: 512,
            },
        )?;
        w.write_node("n1", Some(1), &RangeSet::new(), &RangeSet::new())?;
        for e in small_entries(2_000, NodeName::from("n1")) {
            w.write_entry(&e.path, e.value.as_ref(), e.chain.as_ref(), e.tock)?;
        }
        assert!(w.temp_path().metadata()?.len() > 1000);
    }
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
    Ok(())
}

/// What a reader read, its counts, and whether it ended cleanly.
type ReadAll = (Vec<Item>, SnapshotInfo, bool);

/// Reads all of `r` on a thread of its own, telling `read` how many
/// items it has as it goes; what it read, its counts and whether it ended
/// cleanly, or the error it ended with.
fn read_on_a_thread(
    mut r: SnapshotReader,
    read: std::sync::mpsc::Sender<usize>,
) -> std::thread::JoinHandle<Result<ReadAll, SnapshotError>> {
    std::thread::spawn(move || {
        let mut items = Vec::new();
        for item in r.by_ref() {
            items.push(item?);
            let _ = read.send(items.len());
        }
        Ok((items, r.info(), r.is_complete()))
    })
}

/// A reader that follows a snapshot as it is written reads blocks before
/// the writer is done, waits for the next ones, and ends as a reader of
/// the finished file does: same items, same counts, cleanly.
#[test]
fn a_follower_reads_the_file_while_it_is_written() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("snap");
    let nodes = [node("n1", Some(4_000), &[(1, 3_000)], &[7])];
    let entries: Vec<EntryRecord> = small_entries(4_000, NodeName::from("n1")).collect();
    let options = WriteOptions {
        level: 1,
        block_size: 1 << 10,
    };
    let mut w = SnapshotWriter::create_with(&path, &header(), options)?;
    let (told, read) = std::sync::mpsc::channel();
    let follower = read_on_a_thread(w.follow()?, told);
    w.write_item(&Item::Node(nodes[0].clone()))?;
    let (first, rest) = entries.split_at(2_000);
    for e in first {
        w.write_entry(&e.path, e.value.as_ref(), e.chain.as_ref(), e.tock)?;
    }
    // The follower reads what is written before the rest comes (at most
    // the block being filled and those queued are not written yet).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut got = 0;
    while got < 1_000 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        got = read.recv_timeout(left)?;
    }
    for e in rest {
        w.write_entry(&e.path, e.value.as_ref(), e.chain.as_ref(), e.tock)?;
    }
    let info = w.finish()?;
    let (items, followed, complete) = follower.join().map_err(|_| "follower panicked")??;
    assert!(complete);
    assert_eq!(followed, info);
    assert!(info.blocks > 20, "only {} blocks", info.blocks);
    assert_round_trip(&items, &nodes, &entries);
    assert_eq!(read_all(&path)?.1, items);
    Ok(())
}

/// A follower of a writer dropped (or failed) before its `End` item ends
/// with the truncation a reader of that file would meet, not waiting on.
#[test]
fn a_follower_of_an_abandoned_writer_ends_truncated() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("snap");
    let options = WriteOptions {
        level: 1,
        block_size: 512,
    };
    let mut w = SnapshotWriter::create_with(&path, &header(), options)?;
    let (told, read) = std::sync::mpsc::channel();
    let follower = read_on_a_thread(w.follow()?, told);
    w.write_node("n1", Some(1), &RangeSet::new(), &RangeSet::new())?;
    for e in small_entries(2_000, NodeName::from("n1")) {
        w.write_entry(&e.path, e.value.as_ref(), e.chain.as_ref(), e.tock)?;
    }
    let written = w.temp_path().metadata()?.len();
    drop(w);
    // It read up to the last block written, and no further.
    let items = read.iter().last().unwrap_or(0);
    assert!(items > 100, "read {items} items");
    match follower.join().map_err(|_| "follower panicked")? {
        Err(SnapshotError::Truncated { file, offset }) => {
            assert_eq!(file, temp_path(&path));
            assert!(offset >= written, "truncated at {offset} of {written}");
        }
        other => panic!("expected a truncation, got {other:?}"),
    }
    Ok(())
}

/// A block write that fails on the writer's thread (here: the temporary
/// file is a pipe whose reader took the header and left) fails a later
/// call with that error, poisons the writer, and leaves no file behind.
#[cfg(unix)]
#[test]
fn a_block_write_failing_on_the_writers_thread_is_reported_and_poisons_it() -> TestResult {
    use std::io::Read;

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("snap");
    let tmp = temp_path(&path);
    assert!(std::process::Command::new("mkfifo")
        .arg(&tmp)
        .status()?
        .success());
    // Opening either end of a pipe waits for the other: the reader goes
    // once it has read from the header, before the first block is written.
    let reader = std::thread::spawn({
        let tmp = tmp.clone();
        move || std::fs::File::open(tmp)?.read(&mut [0; 8])
    });
    let options = WriteOptions {
        level: 1,
        block_size: 512,
    };
    let mut w = SnapshotWriter::create_with(&path, &header(), options)?;
    assert!(reader.join().map_err(|_| "reader panicked")?? > 0);
    let mut failed = None;
    for (i, e) in small_entries(5_000, NodeName::from("n1")).enumerate() {
        if let Err(err) = w.write_entry(&e.path, e.value.as_ref(), e.chain.as_ref(), e.tock) {
            failed = Some((i, err));
            break;
        }
    }
    // The thread stops at the first block; the blocks handed over before it
    // stopped, and the one waited for, go through (an item takes at least 8
    // bytes of a block, its length prefix included).
    let (i, err) = failed.ok_or("no call failed")?;
    assert!(i < (BLOCKS_AHEAD + 3) * 512 / 8, "failed at entry {i}");
    match err {
        SnapshotError::Io { file, source } => {
            assert_eq!(file, tmp);
            assert_eq!(source.kind(), std::io::ErrorKind::BrokenPipe);
        }
        e => panic!("unexpected error {e}"),
    }
    let e = small_entries(1, NodeName::from("n1"))
        .next()
        .ok_or("no entry")?;
    let later = w.write_entry(&e.path, e.value.as_ref(), e.chain.as_ref(), e.tock);
    assert!(matches!(later, Err(SnapshotError::InvalidInput(_))));
    assert!(matches!(w.finish(), Err(SnapshotError::InvalidInput(_))));
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
    Ok(())
}

#[test]
fn rejected_input_leaves_the_writer_usable() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("snap");
    let invalid = |r: crate::Result<()>| matches!(r, Err(SnapshotError::InvalidInput(_)));
    let empty = RangeSet::new();
    let mut w = SnapshotWriter::create(&path, &header())?;
    w.write_node("n1", None, &empty, &empty)?;
    assert!(invalid(w.write_node("n1", None, &empty, &empty)));
    assert!(invalid(w.write_node(
        "n2",
        Some(MAX_COUNTER + 1),
        &empty,
        &empty
    )));
    let a = [Value::str("a")];
    assert!(invalid(w.write_entry(&a, None, None, MAX_COUNTER + 1)));
    let bad_chain = chain(&[("n1", 1), ("n1", 2)]);
    assert!(invalid(w.write_entry(&a, None, bad_chain.as_ref(), 1)));
    let mut deep = Value::Nil;
    for _ in 0..=crate::MAX_NESTING {
        deep = Value::Array(vec![deep]);
    }
    assert!(invalid(w.write_entry(&a, Some(&deep), None, 1)));
    assert!(invalid(w.write_entry(&[deep.clone()], None, None, 1)));
    let huge = Value::Bin(Arc::from(vec![0u8; crate::MAX_ITEM_LEN + 1]));
    assert!(invalid(w.write_entry(&a, Some(&huge), None, 1)));
    // Exactly at the nesting limit is fine.
    let Value::Array(inner) = deep else {
        unreachable!()
    };
    w.write_entry(&a, Some(&inner[0]), None, 1)?;
    assert!(invalid(w.write_node("n3", None, &empty, &empty)));
    let info = w.finish()?;
    assert_eq!((info.nodes, info.entries), (1, 1));
    let (_, items) = read_all(&path)?;
    assert_eq!(items.len(), 2);
    Ok(())
}

#[test]
fn bad_options_and_names_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("snap");
    for options in [
        WriteOptions {
            level: 3,
            block_size: 0,
        },
        WriteOptions {
            level: 3,
            block_size: crate::MAX_BLOCK_LEN + 1,
        },
        WriteOptions {
            level: 99,
            block_size: 1024,
        },
    ] {
        assert!(matches!(
            SnapshotWriter::create_with(&path, &header(), options),
            Err(SnapshotError::InvalidInput(_))
        ));
    }
    let long = SnapshotHeader {
        node: NodeName::from("n".repeat(70_000)),
        ..header()
    };
    assert!(matches!(
        SnapshotWriter::create(&path, &long),
        Err(SnapshotError::InvalidInput(_))
    ));
    assert!(matches!(
        SnapshotWriter::create(dir.path().join("missing/snap"), &header()),
        Err(SnapshotError::Io { .. })
    ));
    assert!(matches!(
        SnapshotReader::open(dir.path().join("absent")),
        Err(SnapshotError::Io { .. })
    ));
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
    Ok(())
}

#[test]
fn writer_and_reader_can_move_to_another_thread() {
    fn is_send<T: Send>() {}
    is_send::<SnapshotWriter>();
    is_send::<SnapshotReader>();
    is_send::<SnapshotError>();
}

#[test]
fn snapshot_is_at_most_a_third_of_distkv_save_format() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("snap");
    let n1 = NodeName::from("n1");
    let mut w = SnapshotWriter::create(&path, &header())?;
    w.write_node(&n1, Some(100_000), &RangeSet::new(), &RangeSet::new())?;
    for e in small_entries(100_000, n1.clone()) {
        w.write_entry(&e.path, e.value.as_ref(), e.chain.as_ref(), e.tock)?;
    }
    let info = w.finish()?;
    let entries: Vec<EntryRecord> = small_entries(100_000, n1).collect();
    let plain = distkv_save_format(&entries).len() as u64;
    eprintln!(
        "100 000 small entries: snapshot {} bytes ({:.2} B/entry, {} blocks), DistKV save format {} bytes ({:.2} B/entry), ratio {:.3}",
        info.bytes,
        info.bytes as f64 / 1e5,
        info.blocks,
        plain,
        plain as f64 / 1e5,
        info.bytes as f64 / plain as f64
    );
    assert!(info.bytes * 3 <= plain, "{} vs {plain}", info.bytes);
    assert_eq!(SnapshotReader::verify(&path)?.entries, 100_000);
    Ok(())
}

// ---------------------------------------------------------------- proptest

fn element() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-z]{0,6}".prop_map(|s| Value::str(&s)),
        (-5i64..5).prop_map(Value::Int),
        any::<bool>().prop_map(Value::Bool),
        (0u8..4).prop_map(|f| Value::Float(f as f64 / 2.0)),
        Just(Value::Nil),
    ]
}

pub(crate) fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<u64>().prop_map(Value::uint),
        any::<f64>().prop_map(Value::Float),
        ".{0,12}".prop_map(|s| Value::str(&s)),
        proptest::collection::vec(any::<u8>(), 0..12).prop_map(|b| Value::Bin(Arc::from(b))),
        (1u8..=255, proptest::collection::vec(any::<u8>(), 8..12)).prop_map(|(h, mut b)| {
            b.insert(0, h);
            Value::BigUint(Arc::from(b))
        }),
        (4i8..100, proptest::collection::vec(any::<u8>(), 0..5))
            .prop_map(|(t, b)| Value::Ext(t, Arc::from(b))),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Value::Map),
            proptest::collection::vec(element(), 0..3).prop_map(|p| Value::Path(Path::new(p))),
        ]
    })
}

pub(crate) fn entry_strategy() -> impl Strategy<Value = EntryRecord> {
    let names = ["n1", "n2", "n3", "stranger"];
    (
        proptest::collection::vec(element(), 0..5),
        proptest::option::of(value()),
        proptest::collection::btree_map(0usize..4, 0u64..=MAX_COUNTER, 0..4),
        0u64..=MAX_COUNTER,
    )
        .prop_map(move |(path, value, links, tock)| EntryRecord {
            path: Path::new(path),
            value,
            chain: Chain::from_links(
                links
                    .into_iter()
                    .map(|(n, tick)| Link {
                        node: NodeName::from(names[n]),
                        tick,
                    })
                    .collect(),
            ),
            tock,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn random_entries_round_trip(
        entries in proptest::collection::vec(entry_strategy(), 0..60),
        block_size in 16usize..4096,
    ) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let path = dir.path().join("snap");
        let nodes = [node("n1", Some(3), &[(1, 2)], &[]), node("n2", None, &[], &[9]), node("n3", Some(0), &[], &[])];
        let options = WriteOptions { level: 1, block_size };
        write(&path, &nodes, &entries, options).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (_, items) = read_all(&path).map_err(|e| TestCaseError::fail(e.to_string()))?;
        assert_round_trip(&items, &nodes, &entries);
    }
}

/// A snapshot file written before the internal formats moved to serde
/// reads back as it was written.
#[test]
fn a_snapshot_written_before_serde_reads() -> TestResult {
    let hex = "444b56534e41500a010002006e312a000000000000000068e5cf8b0100004d00000000000000dd090839560000004d0000001a3beb3328b52ffd204d6902000b0000009500a26e310791920104901000000096010091a161940007a1780203a276610d00000095010191a162940007a17802040d00000096010092a163d40301c00591c00400000093020103";
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<_, _>>()?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("old");
    std::fs::write(&path, bytes)?;
    let (h, items) = read_all(&path)?;
    assert_eq!(
        (&*h.node, h.seq, h.created_ms, h.tock),
        ("n1", 42, 1_700_000_000_000, 77)
    );
    assert_eq!(items.len(), 4);
    assert_eq!(items[0], Item::Node(node("n1", Some(7), &[(1, 4)], &[])));
    let c = chain(&[("n1", 7), ("x", 2)]);
    let want = [
        entry(vec![Value::str("a")], Some(Value::str("va")), c.clone(), 3),
        entry(vec![Value::str("a"), Value::str("b")], None, c, 4),
        entry(
            vec![Value::str("c"), Value::Path(Path::new(vec![Value::Int(1)]))],
            Some(Value::Array(vec![Value::Nil])),
            None,
            5,
        ),
    ];
    for (got, want) in items[1..].iter().zip(&want) {
        assert_same_entry(got, want);
    }
    Ok(())
}
