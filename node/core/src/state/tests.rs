//! Apply-rule scenarios and merge properties of the state machine.

use super::*;
use distkv_model::path;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn state(name: &str) -> State {
    let mut s = State::new(name, LogLimits::default());
    s.make_ready();
    s
}

fn set(s: &mut State, p: &Path, v: i64) -> Arc<UpdateEvent> {
    s.local_change(p, Some(Value::Int(v))).unwrap()
}

fn value_at(s: &State, p: &Path) -> Option<Value> {
    s.entry(p).and_then(|e| e.data_cloned())
}

/// Everything observable about the tree: path → (value, chain, tock).
fn snapshot(s: &State) -> BTreeMap<String, (Option<Value>, Option<Chain>)> {
    let mut out = BTreeMap::new();
    let mut cur = WalkCursor::default();
    let opts = WalkOpts {
        empty: true,
        meta: true,
        ..WalkOpts::default()
    };
    while !cur.is_done() {
        cur.step(s.root(), &opts, 100, |e, rel| {
            if e.chain().is_some() {
                out.insert(
                    Path::new(rel.to_vec()).to_string(),
                    (e.data_cloned(), e.chain_cloned()),
                );
            }
        });
    }
    out
}

#[test]
fn local_change_advances_tick_and_tock() {
    let mut s = state("n1");
    let p = path!["a", "b"];
    let e1 = set(&mut s, &p, 1);
    assert_eq!(e1.chain.head().tick, 1);
    let e2 = set(&mut s, &p, 2);
    assert_eq!(e2.chain.head().tick, 2);
    assert_eq!(e2.chain.len(), 1, "own old link is replaced, not kept");
    assert!(e2.tock > e1.tock);
    assert_eq!(s.tick(), Some(2));
    assert_eq!(value_at(&s, &p), Some(Value::Int(2)));
    // Tick 1 is superseded, tick 2 present.
    let n = s.node("n1").unwrap();
    assert!(n.superseded().contains(1));
    assert!(n.present().contains(2));
    assert!(n.missing().is_empty());
    assert_eq!(s.log().next_seq(), 3);
}

#[test]
fn node_without_tick_refuses_changes() {
    let mut s = State::new("n1", LogLimits::default());
    assert_eq!(s.local_change(&path!["x"], None), Err(StateError::NotReady));
}

#[test]
fn echo_of_own_event_is_a_no_op() {
    let mut s = state("n1");
    let e = set(&mut s, &path!["k"], 5);
    let seq = s.log().next_seq();
    assert_eq!(s.apply((*e).clone()), Applied::Same);
    assert_eq!(s.log().next_seq(), seq);
}

#[test]
fn descendant_from_other_node_replaces_value_even_with_lower_tock() {
    let mut a = state("a");
    let mut b = state("b");
    let p = path!["k"];
    let e1 = set(&mut a, &p, 1);
    b.apply((*e1).clone());
    let e2 = set(&mut b, &p, 2);
    assert_eq!(e2.chain.len(), 2);
    assert!(matches!(a.apply((*e2).clone()), Applied::Stored(_)));
    assert_eq!(value_at(&a, &p), Some(Value::Int(2)));
    // a's tick 1 is still in the chain: present, not superseded.
    assert!(a.node("a").unwrap().present().contains(1));
}

#[test]
fn stale_event_never_overwrites_newer() {
    let mut a = state("a");
    let p = path!["k"];
    let old = set(&mut a, &p, 1);
    set(&mut a, &p, 2);
    let mut b = state("b");
    // b got both, in the wrong order.
    let newer = a.entry(&p).unwrap().chain().unwrap().clone();
    b.apply(UpdateEvent {
        path: p.clone(),
        chain: newer,
        value: Some(Value::Int(2)),
        tock: 100,
    });
    assert_eq!(b.apply((*old).clone()), Applied::Stale);
    assert_eq!(value_at(&b, &p), Some(Value::Int(2)));
    assert!(b.node("a").unwrap().superseded().contains(1));
    assert!(b.node("a").unwrap().missing().is_empty());
}

#[test]
fn concurrent_writes_higher_tock_wins_in_both_orders() {
    let p = path!["k"];
    let low = UpdateEvent {
        path: p.clone(),
        chain: Chain::single(NodeName::from("a"), 1),
        value: Some(Value::Int(1)),
        tock: 10,
    };
    let high = UpdateEvent {
        path: p.clone(),
        chain: Chain::single(NodeName::from("b"), 1),
        value: Some(Value::Int(2)),
        tock: 12,
    };
    for order in [[&low, &high], [&high, &low]] {
        let mut s = state("c");
        for e in order {
            s.apply(e.clone());
        }
        assert_eq!(value_at(&s, &p), Some(Value::Int(2)));
        assert!(s.node("a").unwrap().superseded().contains(1));
    }
}

#[test]
fn equal_tock_is_broken_by_node_name_not_arrival() {
    let p = path!["k"];
    let mk = |n: &str, v| UpdateEvent {
        path: p.clone(),
        chain: Chain::single(NodeName::from(n), 1),
        value: Some(Value::Int(v)),
        tock: 7,
    };
    let (x, y) = (mk("x", 1), mk("y", 2));
    for order in [[&x, &y], [&y, &x]] {
        let mut s = state("c");
        for e in order {
            s.apply(e.clone());
        }
        assert_eq!(value_at(&s, &p), Some(Value::Int(2)));
    }
}

#[test]
fn later_deletion_wins_over_earlier_concurrent_set_in_both_orders() {
    let p = path!["k"];
    let del = UpdateEvent {
        path: p.clone(),
        chain: Chain::single(NodeName::from("a"), 1),
        value: None,
        tock: 20,
    };
    let set = UpdateEvent {
        path: p.clone(),
        chain: Chain::single(NodeName::from("b"), 1),
        value: Some(Value::Int(1)),
        tock: 5,
    };
    for order in [[&del, &set], [&set, &del]] {
        let mut s = state("c");
        for e in order {
            s.apply(e.clone());
        }
        assert_eq!(value_at(&s, &p), None);
        assert!(s.node("a").unwrap().deleted().contains(1));
    }
}

#[test]
fn deletion_keeps_a_tombstone_and_marks_ticks_deleted() {
    let mut s = state("n1");
    let p = path!["k"];
    set(&mut s, &p, 1);
    s.local_change(&p, None).unwrap();
    let e = s.entry(&p).unwrap();
    assert!(e.data().is_none());
    assert!(e.chain().is_some());
    assert!(s.node("n1").unwrap().deleted().contains(2));
    let pend = s.take_pending_deleted();
    assert!(pend.0["n1"].contains(2));
}

#[test]
fn entries_are_found_by_node_and_tick() {
    let mut s = state("n1");
    set(&mut s, &path!["a"], 1);
    set(&mut s, &path!["b"], 2);
    assert_eq!(s.entry_by_tick("n1", 2).unwrap().path(), path!["b"]);
    set(&mut s, &path!["b"], 3);
    assert!(
        s.entry_by_tick("n1", 2).is_none(),
        "superseded tick maps to nothing"
    );
    assert_eq!(s.enum_node("n1", 0, false).unwrap(), vec![1, 3]);
}

#[test]
fn missing_ticks_are_reported_per_node() {
    let mut s = state("me");
    s.apply(UpdateEvent {
        path: path!["x"],
        chain: Chain::single(NodeName::from("other"), 5),
        value: Some(Value::Int(1)),
        tock: 3,
    });
    let o = s.node("other").unwrap();
    assert_eq!(o.tick(), Some(5));
    assert_eq!(o.missing().ranges().collect::<Vec<_>>(), vec![(1, 5)]);
}

#[test]
fn walk_visits_depth_first_node_before_children_in_chunks() {
    let mut s = state("n1");
    for (p, v) in [
        (path!["a"], 1),
        (path!["a", "b"], 2),
        (path!["a", "b", "c"], 3),
        (path!["a", "d"], 4),
        (path!["e"], 5),
    ] {
        set(&mut s, &p, v);
    }
    for budget in 1..8 {
        let mut got = Vec::new();
        let mut cur = WalkCursor::default();
        while !cur.is_done() {
            cur.step(s.root(), &WalkOpts::default(), budget, |e, rel| {
                assert_eq!(rel, &e.path()[..]);
                got.push((Path::new(rel.to_vec()).to_string(), rel.len()))
            });
        }
        assert_eq!(
            got,
            vec![
                ("a".into(), 1),
                ("a.b".into(), 2),
                ("a.b.c".into(), 3),
                ("a.d".into(), 2),
                ("e".into(), 1)
            ],
            "budget {budget}"
        );
    }
    let mut got = Vec::new();
    let mut cur = WalkCursor::default();
    let opts = WalkOpts {
        min_depth: 1,
        max_depth: Some(2),
        ..WalkOpts::default()
    };
    while !cur.is_done() {
        cur.step(s.root(), &opts, 3, |e, rel| {
            assert_eq!(rel, &e.path()[..]);
            got.push(e.path().to_string())
        });
    }
    assert_eq!(got, vec!["a", "a.b", "a.d", "e"]);
}

/// A seeded xorshift step.
fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// A path of 1 to 4 names out of a few; nil first makes a meta entry.
fn random_path(x: &mut u64) -> Path {
    let len = 1 + xorshift(x) % 4;
    let names = (0..len)
        .map(|i| match xorshift(x) % 5 {
            0 if i == 0 => Value::Nil,
            0 | 1 => Value::str("a"),
            2 => Value::str("b"),
            3 => Value::str("c"),
            _ => Value::Int(1),
        })
        .collect();
    Path::new(names)
}

/// Sets, deletes or purges something: what may happen between two chunks
/// of a walk.
fn random_change(s: &mut State, x: &mut u64) {
    let p = random_path(x);
    match xorshift(x) % 4 {
        0 | 1 => {
            set(s, &p, 1);
        }
        2 => {
            s.local_change(&p, None).unwrap();
        }
        _ => {
            s.purge_deleted(u64::MAX);
        }
    }
}

/// Every entry a walk passes is handed its path relative to the start, the
/// one `Entry::path` computes: also when the tree changes between chunks
/// (entries added, deleted, purged — open levels among them), with or
/// without the meta tree, with depth limits, pruning and a start below the
/// root.
#[test]
fn walks_hand_each_entry_its_path_across_changing_chunks() {
    let mut visits = 0;
    for seed in 1..=300u64 {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut s = state("n1");
        for _ in 0..60 {
            random_change(&mut s, &mut x);
        }
        let start_at = if seed % 3 == 0 { path!["a"] } else { path![] };
        s.ensure_entry(&start_at);
        let opts = WalkOpts {
            min_depth: (seed / 9 % 3) as usize,
            max_depth: [None, Some(1), Some(3)][(seed / 3 % 3) as usize],
            empty: seed % 2 == 0,
            meta: seed % 4 < 2,
        };
        let pruned = seed % 5 < 2;
        let budget = 1 + (seed / 27 % 4) as usize;
        let mut cur = WalkCursor::default();
        while !cur.is_done() {
            let Some(start) = s.entry(&start_at) else {
                break; // purged: the walk is over
            };
            let mut check = |e: Entry<'_>, rel: &[Value], report: bool| {
                let full = e.path();
                assert_eq!(full[..start_at.len()], start_at[..], "seed {seed}");
                assert_eq!(&full[start_at.len()..], rel, "seed {seed}");
                if report {
                    assert!(rel.len() >= opts.min_depth, "seed {seed}: {full}");
                    assert!(opts.max_depth.is_none_or(|m| rel.len() <= m));
                    assert!(opts.empty || e.data().is_some(), "seed {seed}: {full}");
                }
                assert!(opts.meta || rel.first().is_none_or(|n| !n.is_nil()));
                visits += 1;
            };
            if pruned {
                cur.step_pruned(start, &opts, budget, |e, rel, report| {
                    check(e, rel, report);
                    *e.name() != Value::str("b")
                });
            } else {
                cur.step(start, &opts, budget, |e, rel| check(e, rel, true));
            }
            random_change(&mut s, &mut x);
        }
    }
    assert!(visits > 3000, "{visits} visits");
}

#[test]
fn delete_tree_deletes_entries_with_data_parents_first() {
    let mut s = state("n1");
    set(&mut s, &path!["t", "a"], 1);
    set(&mut s, &path!["t", "a", "b"], 2);
    s.ensure_entry(&path!["t", "c", "d"]);
    let evs = s.delete_tree(&path!["t"], &acl::Access::Full).unwrap();
    let paths: Vec<_> = evs.iter().map(|(e, _)| e.path.to_string()).collect();
    assert_eq!(paths, vec!["t.a", "t.a.b"]);
    assert_eq!(evs[0].1, Some(Value::Int(1)));
    assert!(value_at(&s, &path!["t", "a", "b"]).is_none());
}

// ---------------------------------------------------------------- properties

/// A random history: several nodes write to a few keys and now and then
/// deliver each other's events. Returns every event made.
fn history(ops: &[(u8, u8, u8, Option<i8>)]) -> Vec<UpdateEvent> {
    let names = ["n0", "n1", "n2"];
    let mut nodes: Vec<State> = names.iter().map(|n| state(n)).collect();
    let mut all: Vec<UpdateEvent> = Vec::new();
    for &(who, key, deliver, val) in ops {
        let who = who as usize % nodes.len();
        let p = path!["k", (key % 3) as i64];
        let e = nodes[who]
            .local_change(&p, val.map(|v| Value::Int(v as i64)))
            .unwrap();
        all.push((*e).clone());
        // Deliver a prefix of everything to one node (possibly out of date).
        let to = deliver as usize % nodes.len();
        let upto = (deliver as usize * 7) % (all.len() + 1);
        for ev in &all[..upto] {
            nodes[to].apply(ev.clone());
        }
    }
    all
}

fn apply_all(events: &[UpdateEvent]) -> State {
    let mut s = state("observer");
    for e in events {
        s.apply(e.clone());
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed), ..ProptestConfig::default() })]

    #[test]
    fn reapplying_an_event_is_a_no_op(ops in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), any::<Option<i8>>()), 1..40)) {
        let events = history(&ops);
        let mut s = apply_all(&events);
        let before = snapshot(&s);
        let seq = s.log().next_seq();
        for e in &events {
            let out = s.apply(e.clone());
            prop_assert!(!matches!(out, Applied::Stored(_)), "{:?} stored again", e);
        }
        prop_assert_eq!(snapshot(&s), before);
        prop_assert_eq!(s.log().next_seq(), seq);
    }

    #[test]
    fn delivery_order_does_not_change_the_final_tree(
        ops in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), any::<Option<i8>>()), 1..40),
        perm_seed in any::<u64>(),
    ) {
        let events = history(&ops);
        let reference = snapshot(&apply_all(&events));
        // A seeded Fisher-Yates shuffle.
        let mut shuffled = events.clone();
        let mut x = perm_seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let s = apply_all(&shuffled);
        prop_assert_eq!(snapshot(&s), reference);
        // Everything every node ever did is accounted for.
        for (_, info) in s.nodes() {
            prop_assert!(info.missing().is_empty(), "missing {:?}", info.missing());
        }
    }

    #[test]
    fn replay_ends_in_the_same_state_as_apply_without_logging(
        ops in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), any::<Option<i8>>()), 1..40),
    ) {
        let events = history(&ops);
        let applied = apply_all(&events);
        let mut replayed = state("observer");
        for e in &events {
            replayed.replay(e.clone());
        }
        prop_assert_eq!(replayed.digest(), applied.digest());
        prop_assert_eq!(snapshot(&replayed), snapshot(&applied));
        prop_assert_eq!(replayed.log().next_seq(), 1);
    }

    #[test]
    fn stale_events_never_overwrite_newer(
        ops in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), any::<Option<i8>>()), 1..40),
    ) {
        let events = history(&ops);
        let s = apply_all(&events);
        // The winner of each key is the event with the highest (tock, node, tick).
        let mut best: BTreeMap<String, &UpdateEvent> = BTreeMap::new();
        for e in &events {
            let k = e.path.to_string();
            let better = best.get(&k).is_none_or(|b| {
                (e.tock, &e.chain.head().node, e.chain.head().tick) > (b.tock, &b.chain.head().node, b.chain.head().tick)
            });
            if better { best.insert(k, e); }
        }
        for (k, e) in best {
            let ent = s.entry(&e.path).unwrap();
            prop_assert_eq!(ent.data_cloned(), e.value.clone(), "at {}", k);
        }
    }
}

#[test]
fn digest_ignores_arrival_order_but_sees_every_change() {
    let mut a = state("a");
    let e1 = set(&mut a, &path!["x"], 1);
    let e2 = set(&mut a, &path!["y"], 2);
    let mut s1 = state("o");
    s1.apply((*e1).clone());
    s1.apply((*e2).clone());
    let mut s2 = state("o");
    s2.apply((*e2).clone());
    s2.apply((*e1).clone());
    assert_eq!(s1.digest(), s2.digest());
    let e3 = set(&mut a, &path!["y"], 3);
    s2.apply((*e3).clone());
    assert_ne!(s1.digest(), s2.digest());
}

#[test]
fn restored_entries_and_nodes_reproduce_the_state() {
    let mut a = state("a");
    set(&mut a, &path!["x"], 1);
    set(&mut a, &path!["x"], 2);
    a.local_change(&path!["y"], Some(Value::Nil)).unwrap();
    a.local_change(&path!["y"], None).unwrap();
    let mut b = State::new("a", LogLimits::default());
    for (name, info) in a.nodes() {
        b.restore_node(name, info.tick(), &info.superseded(), info.deleted());
    }
    let mut cur = WalkCursor::default();
    let opts = WalkOpts {
        empty: true,
        meta: true,
        ..WalkOpts::default()
    };
    while !cur.is_done() {
        cur.step(a.root(), &opts, 10, |e, path| {
            if e.chain().is_some() {
                b.restore_entry(path, e.data_cloned(), e.chain_cloned(), e.tock());
            }
        });
    }
    assert_eq!(a.digest(), b.digest());
    let (na, nb) = (a.node("a").unwrap(), b.node("a").unwrap());
    assert_eq!(na.present(), nb.present());
    assert_eq!(na.superseded(), nb.superseded());
    assert_eq!(na.deleted(), nb.deleted());
    assert_eq!(b.tick(), Some(4));
}

#[test]
fn changes_stop_at_the_tick_reservation_until_it_is_raised() {
    let mut s = state("n1");
    s.set_tick_limit(Some(2));
    set(&mut s, &path!["a"], 1);
    set(&mut s, &path!["a"], 2);
    assert_eq!(
        s.local_change(&path!["a"], Some(Value::Int(3))),
        Err(StateError::TickNotReserved { next: 3 })
    );
    assert_eq!(s.tick(), Some(2), "a refused change uses no tick");
    s.set_tick_limit(Some(10));
    assert_eq!(set(&mut s, &path!["a"], 3).chain.head().tick, 3);
    s.resume_tick_at(100);
    s.set_tick_limit(None);
    assert_eq!(set(&mut s, &path!["b"], 1).chain.head().tick, 101);
}

#[test]
fn purging_removes_old_tombstones_and_bare_parents_only() {
    let mut a = state("a");
    let (leaf, keep, parent_leaf) = (path!["x", "y", "z"], path!["k"], path!["p", "q"]);
    set(&mut a, &leaf, 1);
    set(&mut a, &keep, 2);
    set(&mut a, &path!["p"], 3);
    set(&mut a, &parent_leaf, 4);
    let gone = a.local_change(&leaf, None).unwrap();
    a.local_change(&parent_leaf, None).unwrap();
    let later = a.tock().next();
    a.local_change(&keep, None).unwrap();

    assert_eq!(
        a.purge_deleted(gone.tock),
        0,
        "strictly older tombstones only"
    );
    assert_eq!(a.purge_deleted(later), 2);
    assert!(a.entry(&leaf).is_none());
    assert!(a.entry(&path!["x"]).is_none(), "bare ancestors go too");
    assert!(a.entry(&parent_leaf).is_none());
    assert_eq!(
        value_at(&a, &path!["p"]),
        Some(Value::Int(3)),
        "a parent with data stays"
    );
    assert!(a.entry(&keep).is_some(), "a newer tombstone stays");
    // The purged ticks are known, not missing, and not deleted any more.
    let me = a.node("a").unwrap();
    assert!(me.missing().is_empty());
    assert!(!me.deleted().contains(gone.chain.head().tick));
    assert!(me.superseded().contains(gone.chain.head().tick));
}

#[test]
fn purging_many_interleaved_siblings_keeps_the_others_in_order() {
    let mut a = state("a");
    let key = |i: i64| path!["many", i];
    for i in 0..3_000 {
        set(&mut a, &key(i), i);
    }
    // Every third deleted, in a shuffled order, two of them rewritten.
    let gone: Vec<i64> = (0..3_000).filter(|i| i % 3 == 0).collect();
    let mut ticks = Vec::new();
    for &i in gone.iter().rev().step_by(2).chain(gone.iter().step_by(2)) {
        let ev = a.local_change(&key(i), None).unwrap();
        if i >= 6 {
            ticks.push(ev.chain.head().tick);
        }
    }
    set(&mut a, &key(0), -1);
    set(&mut a, &key(3), -3);
    assert_eq!(a.purge_deleted(u64::MAX), gone.len() - 2);
    let left: Vec<i64> = a
        .entry(&path!["many"])
        .unwrap()
        .children()
        .map(|(n, _)| n.as_i64().unwrap())
        .collect();
    let want: Vec<i64> = (0..3_000).filter(|i| i % 3 != 0 || *i < 6).collect();
    assert_eq!(left, want);
    assert_eq!(value_at(&a, &key(3)), Some(Value::Int(-3)));
    let me = a.node("a").unwrap();
    assert!(me.missing().is_empty());
    for t in ticks {
        assert!(!me.deleted().contains(t), "purged deletions are forgotten");
        assert!(me.superseded().contains(t));
    }
}

#[test]
fn a_rewritten_tombstone_is_not_purged() {
    let mut a = state("a");
    let p = path!["k"];
    set(&mut a, &p, 1);
    a.local_change(&p, None).unwrap();
    set(&mut a, &p, 2);
    assert_eq!(a.purge_deleted(u64::MAX), 0);
    assert_eq!(value_at(&a, &p), Some(Value::Int(2)));
}

#[test]
fn answers_to_a_huge_missing_report_cover_only_what_is_known_here() {
    let mut a = state("a");
    let p = path!["k"];
    set(&mut a, &p, 1);
    set(&mut a, &p, 2);
    let mut huge = NodeSet::default();
    huge.0.insert("a".into(), {
        let mut r = RangeSet::new();
        r.insert_range(1, MAX_COUNTER);
        r
    });
    a.report_missing(&huge);
    let ans = a.answers(100, |_| None);
    assert_eq!(ans.entries.len(), 1, "the entry holding tick 2");
    assert!(ans.known.0["a"].contains(1), "tick 1 was superseded");
    assert_eq!(
        a.node("a").unwrap().tick(),
        Some(2),
        "a report raises no tick"
    );
    assert!(a.has_reported(), "the ticks nobody knows stay reported");
}

#[test]
fn a_report_of_ticks_long_superseded_is_answered_as_ranges_and_the_budget_counts_entries() {
    // 10 keys rewritten: of ticks 1 ..= 5 000 the last 10 stay present;
    // then one of them deleted (tick 5 001).
    let mut a = state("a");
    for t in 0..5_000i64 {
        set(&mut a, &path!["k", t % 10], t);
    }
    a.local_change(&path!["k", 9i64], None).unwrap();
    let present = a.node("a").unwrap().present_ticks();
    assert_eq!(
        present,
        (4_991..=5_001).filter(|&t| t != 5_000).collect::<Vec<_>>()
    );
    let mut all = NodeSet::default();
    all.0.insert("a".into(), (1..=5_001).collect());

    // Ticks outside what `only` allows stay reported.
    a.report_missing(&all);
    let few: RangeSet = (1..=100).collect();
    let ans = a.answers(4, |_| Some(few.clone()));
    assert!(ans.entries.is_empty());
    assert_eq!(ans.known.0["a"], few);
    let left = a.node("a").unwrap().reported().clone();
    assert_eq!(left.ranges().collect::<Vec<_>>(), vec![(101, 5_002)]);

    // Four entries; every superseded tick below the fifth present one in
    // one range; the rest stays reported.
    let ans = a.answers(4, |_| None);
    assert_eq!(ans.entries.len(), 4);
    let known: Vec<_> = ans.known.0["a"].ranges().collect();
    assert_eq!(known, vec![(101, present[0])]);
    assert!(a.has_reported());
    // Then the rest: six entries (the deleted one's too, as its entry with
    // its chain, not as a deleted tick) and the superseded tick 5 000.
    let ans = a.answers(100, |_| None);
    assert_eq!(ans.entries.len(), 6);
    assert!(ans
        .entries
        .iter()
        .any(|e| e.chain.head().tick == 5_001 && e.value.is_none()));
    assert_eq!(ans.known.0["a"].iter().collect::<Vec<_>>(), vec![5_000]);
    assert!(ans.deleted.is_empty());
    assert!(!a.has_reported());
}

#[test]
fn the_ticks_present_within_a_set_are_found_either_way() {
    // Keys rewritten: of ticks 1 ..= 300 only each key's last one stays.
    let mut a = state("a");
    for t in 0..300i64 {
        set(&mut a, &path!["k", (t * 7) % 40], t);
    }
    let present = a.node("a").unwrap().present();
    assert_eq!(present.count(), 40);
    // A set smaller than the present ticks is looked up tick by tick, a
    // larger one intersected with them.
    for (lo, hi) in [(270, 290), (1, 280)] {
        let mut ticks = RangeSet::new();
        ticks.insert_range(lo, hi);
        let want: RangeSet = present.iter().filter(|t| (lo..hi).contains(t)).collect();
        assert_eq!(a.present_within("a", &ticks), want, "{lo}..{hi}");
    }
}

fn chain(links: &[(&str, u64)]) -> Chain {
    Chain::from_links(
        links
            .iter()
            .map(|(n, t)| distkv_model::Link {
                node: NodeName::from(*n),
                tick: *t,
            })
            .collect(),
    )
    .unwrap()
}

/// Forged ticks are refused whoever reports them; nothing outside can
/// raise this node's counter towards exhaustion.
#[test]
fn impossible_ticks_are_refused_by_reporter() {
    let mut s = state("me");
    for i in 0..10 {
        set(&mut s, &path!["k", i], i);
    }
    s.saw_node_tick("peer", 100);
    s.saw_node_tick("gone", 50);
    let live = |n: &str| n == "me" || n == "peer";
    let client = Reporter::Client { live: &live };
    let forged = 1u64 << 62;
    // Clients: never this node or a running node at the head; never a tick
    // beyond this node's counter or a running node's known tick anywhere;
    // never a leap.
    for (c, want) in [
        (chain(&[("me", 5)]), Some("running")),
        (
            chain(&[("gone", 51), ("me", forged)]),
            Some("beyond its own counter"),
        ),
        (
            chain(&[("gone", 51), ("me", 11)]),
            Some("beyond its own counter"),
        ),
        (chain(&[("peer", 90)]), Some("running")),
        (chain(&[("gone", 51), ("peer", 101)]), Some("running")),
        (chain(&[("gone", 51 + MAX_TICK_LEAP)]), Some("far beyond")),
        (chain(&[("new", forged)]), Some("far beyond")),
        (chain(&[("gone", 51), ("peer", 90), ("me", 3)]), None),
        (chain(&[("new", 7)]), None),
    ] {
        let got = s.vet(&c, client).err().map(|e| e.to_string());
        match (want, &got) {
            (None, None) => {}
            (Some(w), Some(g)) if g.contains(w) => {}
            _ => panic!("{c:?}: expected {want:?}, got {got:?}"),
        }
    }
    // Peers speak for themselves, and may name this node a little ahead
    // (it may run from an old copy of its files), never far.
    let peer = Reporter::Peer("peer");
    assert!(s.vet(&chain(&[("peer", forged)]), peer).is_ok());
    assert!(s.vet(&chain(&[("me", 10 + MAX_TICK_LEAP)]), peer).is_ok());
    assert!(s.vet(&chain(&[("me", 11 + MAX_TICK_LEAP)]), peer).is_err());
    assert!(s.vet(&chain(&[("gone", forged)]), peer).is_err());
    assert!(s.vet(&chain(&[("gone", 60)]), peer).is_ok());
    assert!(!s.believable_tick("me", forged, "peer"));
    assert!(s.believable_tick("peer", forged, "peer"));
    // A node that is not ready learns its own tick from others.
    let joining = State::new("me", LogLimits::default());
    assert!(joining.vet(&chain(&[("me", 1 << 40)]), peer).is_ok());
    // After all that, this node's counter is untouched.
    assert_eq!(s.tick(), Some(10));
    set(&mut s, &path!["after"], 1);
    assert_eq!(s.tick(), Some(11));
}

proptest! {
    // Each case fills a state of 9 000 entries first: fewer cases.
    #![proptest_config(ProptestConfig { cases: 24, rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed), ..ProptestConfig::default() })]

    /// A look-ahead is a hint: applying with one ends in the state applying
    /// without one does, also when it is shown other events than those
    /// applied, when it is asked for groups of look-ups in between, and when
    /// purges free (and new entries reuse) the slots it found. The state holds enough other entries to be looked ahead of.
    #[test]
    fn a_look_ahead_changes_nothing_even_when_it_guesses_wrong(
        ops in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), any::<Option<i8>>()), 1..60),
        seed in any::<u64>(),
    ) {
        let events = history(&ops);
        let mut wrong = events.clone();
        wrong.reverse();
        let run = |ahead: Option<&mut Lookahead>| {
            let mut s = state("observer");
            for i in 0..9_000 {
                set(&mut s, &path!["other", i], i);
            }
            let mut x = seed | 1;
            let mut ahead = ahead;
            for (i, e) in events.iter().enumerate() {
                // Drawn in both runs, so that both purge at the same points.
                let guess = xorshift(&mut x) % 3;
                if let Some(a) = ahead.as_deref_mut() {
                    let next = match guess {
                        0 => &wrong[i % wrong.len()..],
                        _ => &events[i + 1..],
                    };
                    a.step(&s, next);
                    if guess == 1 {
                        // A connection's run: more look-ups than a group
                        // takes at once, some of what is not there.
                        let mut paths: Vec<Path> = next.iter().take(20).map(|e| e.path.clone()).collect();
                        paths.extend([Path::root(), path![Value::Nil, "k"], path!["other", 7i64, "x"], path!["k", 9i64]]);
                        a.group(&s, &paths);
                    }
                }
                s.apply(e.clone());
                if xorshift(&mut x) % 5 == 0 {
                    s.purge_deleted(u64::MAX);
                }
            }
            s
        };
        let plain = run(None);
        let ahead = run(Some(&mut Lookahead::default()));
        prop_assert_eq!(ahead.digest(), plain.digest());
        prop_assert_eq!(snapshot(&ahead), snapshot(&plain));
    }
}

/// A local change's event names its entry as the tree does: a name the
/// client gave as another type the tree's equal (`1.0` for `1`, `2` for
/// `2.0`) becomes the tree's own, in the event and so in the log and on
/// the wire, also below and beside names of the same type.
#[test]
fn a_local_change_names_its_entry_as_the_tree_does() {
    let mut s = state("me");
    let int = |i: i64| Value::Int(i);
    let float = |f: f64| Value::Float(f);
    let mut change = |p: Vec<Value>| {
        let e = s.local_change(&Path::new(p), Some(Value::Int(0))).unwrap();
        e.path.to_vec()
    };
    assert_eq!(
        change(vec![Value::str("a"), int(1)]),
        [Value::str("a"), int(1)]
    );
    assert!(matches!(
        change(vec![Value::str("a"), float(1.0)])[..],
        [_, Value::Int(1)]
    ));
    assert!(matches!(
        change(vec![Value::str("a"), float(2.0)])[..],
        [_, Value::Float(_)]
    ));
    assert!(matches!(
        change(vec![Value::str("a"), int(2)])[..],
        [_, Value::Float(_)]
    ));
    assert!(matches!(
        change(vec![Value::str("a"), int(2), int(3)])[..],
        [_, Value::Float(_), Value::Int(3)]
    ));
    assert!(matches!(
        change(vec![Value::str("a"), float(2.0), int(3)])[..],
        [_, Value::Float(_), Value::Int(3)]
    ));
    assert!(matches!(
        change(vec![Value::str("a"), int(1), float(3.0)])[..],
        [_, Value::Int(1), Value::Float(_)]
    ));
    assert!(matches!(
        change(vec![Value::Bool(true), int(1)])[..],
        [Value::Bool(true), Value::Int(1)]
    ));
}

/// The tock only grows: a value seen raises it, a smaller or equal one
/// leaves it, each `next` takes one more.
#[test]
fn the_tock_takes_the_largest_value_seen() {
    let t = Tock::default();
    t.seen(5);
    assert_eq!(t.peek(), 5);
    t.seen(3);
    assert_eq!(t.peek(), 5);
    assert_eq!(t.next(), 6);
    t.seen(6);
    assert_eq!(t.next(), 7);
    t.seen(10);
    assert_eq!(t.peek(), 10);
}
