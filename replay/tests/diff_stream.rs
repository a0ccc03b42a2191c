//! `diff` streams snapshots into compact trees instead of restoring whole
//! states: these tests hold it to what restoring both states and walking
//! them (the reference below, the former implementation) reports — the
//! same differences in the same order, digests and node ticks — for
//! seeded random histories of several nodes, and for snapshots whose
//! entries are not in walk order (duplicates, shuffled, names equal for
//! the tree but written differently), which must fall back to a state.

use std::path::Path;

use anyhow::Result;
use distkv_core::persist::snap;
use distkv_core::state::{Entry, State};
use distkv_log::LogLimits;
use distkv_model::{codec, UpdateEvent, Value};
use distkv_replay::diff::{
    diff_walk, load_side, node_diffs, DiffKind, EntryView, NodeDiff, PathDiff,
};
use distkv_snapshot::{SnapshotHeader, SnapshotWriter};

/// SplitMix64: a small seeded generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random path: up to three levels of a few names (strings and
/// integers), sometimes in the meta tree.
fn random_path(rng: &mut Rng) -> Vec<Value> {
    let mut p = Vec::new();
    if rng.below(10) == 0 {
        p.push(Value::Nil);
    }
    for _ in 0..=rng.below(3) {
        p.push(match rng.below(3) {
            0 => Value::Int(rng.below(6) as i64),
            _ => Value::str(&format!("k{}", rng.below(8))),
        });
    }
    p
}

/// `n` random changes (a fifth of them deletions) made at `st`; returns
/// their events.
fn churn(st: &mut State, rng: &mut Rng, n: usize) -> Vec<UpdateEvent> {
    let mut events = Vec::new();
    for _ in 0..n {
        let path = random_path(rng);
        let value = (rng.below(5) != 0).then(|| Value::Int(rng.below(4) as i64));
        // A change the node refuses is simply not made.
        if let Ok(ev) = st.local_change(&distkv_model::Path::new(path), value) {
            events.push((*ev).clone());
        }
    }
    events
}

/// The diff as it was computed before streaming: both states restored,
/// walked in step.
fn reference_diff(a: &State, b: &State) -> Vec<PathDiff> {
    fn view(e: Entry<'_>) -> Option<EntryView> {
        (e.data().is_some() || e.chain().is_some()).then(|| EntryView {
            value: e.data_cloned(),
            chain: e.chain_cloned(),
            tock: e.tock(),
        })
    }
    fn same(a: &EntryView, b: &EntryView) -> bool {
        let value_same = match (&a.value, &b.value) {
            (None, None) => true,
            (Some(x), Some(y)) => codec::to_vec(x) == codec::to_vec(y),
            _ => false,
        };
        value_same && a.chain == b.chain && a.tock == b.tock
    }
    let mut out = Vec::new();
    let mut stack: Vec<(Option<Entry<'_>>, Option<Entry<'_>>)> =
        vec![(Some(a.root()), Some(b.root()))];
    while let Some((ea, eb)) = stack.pop() {
        let va = ea.and_then(view);
        let vb = eb.and_then(view);
        let kind = match (&va, &vb) {
            (None, None) => None,
            (Some(x), Some(y)) if same(x, y) => None,
            (x, y) => {
                let has = |v: &Option<EntryView>| v.as_ref().is_some_and(|v| v.value.is_some());
                Some(match (has(x), has(y)) {
                    (false, true) => DiffKind::Added,
                    (true, false) => DiffKind::Removed,
                    _ => DiffKind::Changed,
                })
            }
        };
        if let Some(kind) = kind {
            let path = ea.or(eb).map(|e| e.path()).unwrap_or_default();
            out.push(PathDiff {
                kind,
                path,
                a: va,
                b: vb,
            });
        }
        let start = stack.len();
        if let Some(ea) = ea {
            for (name, ca) in ea.children() {
                stack.push((Some(ca), eb.and_then(|eb| eb.child(&name))));
            }
        }
        if let Some(eb) = eb {
            for (name, cb) in eb.children() {
                if ea.and_then(|ea| ea.child(&name)).is_none() {
                    stack.push((None, Some(cb)));
                }
            }
        }
        stack[start..].reverse();
    }
    out
}

/// Node ticks that differ, as computed before streaming.
fn reference_nodes(a: &State, b: &State) -> Vec<NodeDiff> {
    let mut out = Vec::new();
    for (n, i) in a.nodes() {
        let tb = b.node(n).and_then(|x| x.tick());
        if i.tick() != tb {
            out.push(NodeDiff {
                node: n.clone(),
                a: i.tick(),
                b: tb,
            });
        }
    }
    for (n, i) in b.nodes() {
        if a.node(n).is_none() && i.tick().is_some() {
            out.push(NodeDiff {
                node: n.clone(),
                a: None,
                b: i.tick(),
            });
        }
    }
    out
}

/// Diffs two snapshot files both ways and checks everything against the
/// reference; `compact` is whether each file should be streamed without
/// a state.
fn check_pair(fa: &Path, fb: &Path, compact: (bool, bool)) -> Result<usize> {
    let load = |f: &Path| -> Result<State> {
        let node = distkv_snapshot::SnapshotReader::open(f)?
            .header()
            .node
            .clone();
        Ok(snap::load(f, &node, LogLimits::default())?.0)
    };
    let (sa, sb) = (load(fa)?, load(fb)?);
    let a = load_side(&fa.to_string_lossy(), true)?;
    let b = load_side(&fb.to_string_lossy(), true)?;
    assert_eq!((a.built.compact, b.built.compact), compact);
    for (side, st) in [(&a, &sa), (&b, &sb)] {
        assert_eq!(side.built.digest, st.digest(), "{}", side.label);
        let nodes: Vec<_> = st.nodes().map(|(n, i)| (n.clone(), i.tick())).collect();
        assert_eq!(side.built.nodes, nodes, "{}", side.label);
    }
    let mut n = 0;
    for ((x, sx), (y, sy)) in [((&a, &sa), (&b, &sb)), ((&b, &sb), (&a, &sa))] {
        let mut got = Vec::new();
        diff_walk(&x.built.tree, &y.built.tree, &mut |d| {
            got.push(d);
            Ok(())
        })?;
        let want = reference_diff(sx, sy);
        assert_eq!(got, want, "{} vs {}", x.label, y.label);
        assert_eq!(node_diffs(&x.built, &y.built), reference_nodes(sx, sy));
        n += got.len();
    }
    Ok(n)
}

#[test]
fn streamed_diffs_of_random_histories_match_restored_states() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    for seed in 0..12u64 {
        let mut rng = Rng(seed);
        let mut n1 = State::new("n1", LogLimits::default());
        n1.make_ready();
        let mut events = churn(&mut n1, &mut rng, 60);
        let fa = tmp.path().join(format!("a{seed}.dkvsnap"));
        snap::write(&n1, &fa, true, 0, 0)?.finish()?;
        // A second node that got n1's changes in another order, made its
        // own, and changed some of n1's.
        let mut n2 = State::new("n2", LogLimits::default());
        n2.make_ready();
        churn(&mut n2, &mut rng, 20);
        for i in (1..events.len()).rev() {
            events.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for ev in events {
            n2.apply(ev);
        }
        churn(&mut n2, &mut rng, 30);
        churn(&mut n1, &mut rng, 10);
        let fb = tmp.path().join(format!("b{seed}.dkvsnap"));
        let fc = tmp.path().join(format!("c{seed}.dkvsnap"));
        snap::write(&n2, &fb, true, 0, 0)?.finish()?;
        snap::write(&n1, &fc, rng.below(2) == 0, 0, 0)?.finish()?;
        let found = check_pair(&fa, &fb, (true, true))? + check_pair(&fa, &fc, (true, true))?;
        assert!(found > 0, "seed {seed}: the histories differ");
        check_pair(&fb, &fb, (true, true))?;
    }
    Ok(())
}

/// An entry to write as it is: path, value, tock.
type Raw = (Vec<Value>, Option<Value>, u64);

/// Writes `entries` as they are, in this order, to a snapshot of node
/// `n1`.
fn write_raw(file: &Path, entries: &[Raw]) -> Result<()> {
    let header = SnapshotHeader {
        node: "n1".into(),
        seq: 0,
        created_ms: 0,
        tock: 0,
    };
    let mut w = SnapshotWriter::create(file, &header)?;
    w.write_node("n1", Some(9), &Default::default(), &Default::default())?;
    for (path, value, tock) in entries {
        w.write_entry(path, value.as_ref(), None, *tock)?;
    }
    w.finish()?;
    Ok(())
}

#[test]
fn snapshots_out_of_walk_order_fall_back_to_a_state_with_the_same_result() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let s = Value::str;
    let i = Value::Int;
    let base: Vec<Raw> = vec![
        (vec![s("a")], Some(i(1)), 1),
        (vec![s("a"), s("x")], Some(i(2)), 2),
        (vec![s("b"), i(1)], Some(i(3)), 3),
        (vec![s("c")], Some(i(4)), 4),
    ];
    let fa = tmp.path().join("in-order.dkvsnap");
    write_raw(&fa, &base)?;
    let odd: [Vec<Raw>; 5] = [
        // A branch reopened after a sibling.
        vec![
            base[0].clone(),
            base[2].clone(),
            base[1].clone(),
            base[3].clone(),
        ],
        // A parent after its child.
        vec![
            base[1].clone(),
            base[0].clone(),
            base[2].clone(),
            base[3].clone(),
        ],
        // The same path twice: the later one wins.
        vec![
            base[0].clone(),
            base[1].clone(),
            base[2].clone(),
            base[3].clone(),
            (vec![s("c")], Some(i(5)), 5),
        ],
        // `1.0` names the node `1`: the state keeps the first spelling.
        vec![
            base[0].clone(),
            base[2].clone(),
            (vec![s("b"), Value::Float(1.0), s("z")], Some(i(6)), 6),
            base[3].clone(),
        ],
        // `1.0` first, then `1` under it: same.
        vec![
            (vec![s("b"), Value::Float(1.0)], Some(i(3)), 3),
            (vec![s("b"), i(1), s("z")], Some(i(6)), 6),
        ],
    ];
    for (k, entries) in odd.iter().enumerate() {
        let fb = tmp.path().join(format!("odd{k}.dkvsnap"));
        write_raw(&fb, entries)?;
        check_pair(&fa, &fb, (true, false))?;
    }
    // `1.0` and `1` as siblings of different parents are in walk order.
    let fine = vec![
        (vec![s("b"), Value::Float(1.0)], Some(i(3)), 3),
        (vec![s("c"), i(1)], Some(i(6)), 6),
    ];
    let fb = tmp.path().join("fine.dkvsnap");
    write_raw(&fb, &fine)?;
    assert!(check_pair(&fa, &fb, (true, true))? > 0);
    Ok(())
}

/// A live node's tree is read in place (each reply's bytes copied into the
/// compact tree, not decoded): the side read must be the node's state —
/// digest, node ticks, and the same differences against a snapshot as the
/// restored states give — for values of every kind and paths of several.
#[test]
fn live_nodes_read_in_place_match_their_states() -> Result<()> {
    use distkv_model::Path as KvPath;
    use distkv_node::server::{self, Server, ServerOptions};
    use std::sync::Arc;

    let tmp = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    for seed in 0..4u64 {
        let mut rng = Rng(seed);
        let values = |rng: &mut Rng| match rng.below(8) {
            0 => Value::str("text with spaces, é and 日本"),
            1 => Value::Float(rng.below(100) as f64 / 8.0),
            2 => Value::Bin(Arc::from(vec![
                rng.below(256) as u8;
                rng.below(40) as usize
            ])),
            3 => Value::map([
                ("a", Value::Int(-300)),
                ("b", Value::Array(vec![Value::Nil])),
            ]),
            4 => Value::uint(u64::MAX - rng.below(9)),
            5 => Value::Path(KvPath::new(vec![Value::str("p"), Value::Int(1)])),
            _ => Value::Int(rng.below(1 << 20) as i64 - (1 << 19)),
        };
        let mut st = State::new("n1", LogLimits::default());
        st.make_ready();
        let mut other = State::new("n2", LogLimits::default());
        other.make_ready();
        for i in 0..300 {
            let mut path: Vec<Value> = (0..=rng.below(3))
                .map(|_| match rng.below(4) {
                    0 => Value::Int(rng.below(5) as i64),
                    1 => Value::Bool(rng.below(2) == 0),
                    _ => Value::str(&format!("k{}", rng.below(6))),
                })
                .collect();
            path.insert(0, Value::str("t"));
            let value = (rng.below(6) != 0).then(|| values(&mut rng));
            let target = if i % 3 == 0 { &mut other } else { &mut st };
            if let Ok(ev) = target.local_change(&distkv_model::Path::new(path), value) {
                if rng.below(2) == 0 {
                    let ev = (*ev).clone();
                    let _ = if i % 3 == 0 {
                        st.apply(ev)
                    } else {
                        other.apply(ev)
                    };
                }
            }
        }
        let file = tmp.path().join(format!("other{seed}.dkvsnap"));
        snap::write(&other, &file, true, 0, 0)?.finish()?;
        let want_digest = st.digest();
        let want_nodes: Vec<_> = st.nodes().map(|(n, i)| (n.clone(), i.tick())).collect();
        let want_diff = reference_diff(&st, &other);
        let addr = rt.block_on(async {
            let srv = Server::with_state(st, ServerOptions::default());
            let listener = server::bind("127.0.0.1", 0).await?;
            let addr = listener.local_addr()?;
            tokio::spawn(server::serve(srv, listener, shutdown.clone()));
            Ok::<_, anyhow::Error>(addr)
        })?;
        let live = load_side(&addr.to_string(), true)?;
        let snapshot = load_side(&file.to_string_lossy(), true)?;
        assert!(live.built.compact, "seed {seed}");
        assert_eq!(live.built.digest, want_digest, "seed {seed}");
        assert_eq!(live.built.nodes, want_nodes, "seed {seed}");
        let mut got = Vec::new();
        diff_walk(&live.built.tree, &snapshot.built.tree, &mut |d| {
            got.push(d);
            Ok(())
        })?;
        assert!(!got.is_empty(), "seed {seed}: the states differ");
        assert_eq!(got, want_diff, "seed {seed}");
    }
    shutdown.cancel();
    Ok(())
}
