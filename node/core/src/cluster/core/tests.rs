use super::*;
use crate::state::{NodeInfo, MAX_TICK_LEAP};
use distkv_log::LogLimits;
use distkv_model::path;
use distkv_model::{Chain, UpdateEvent};
use rand::RngCore;

/// Garbage and hostile-but-decodable messages on every topic are
/// ignored: no panic, no change.
#[test]
fn bad_bus_messages_are_ignored() {
    let mut st = State::new("n1", LogLimits::default());
    st.make_ready();
    let mut core = Core::new(&st, ClusterConfig::default(), 1, None);
    core.start(&mut st, 0);
    let before = st.digest();
    let topics = core.topics().clone();
    let mut rng = StdRng::seed_from_u64(5);
    let hostile = [
        Value::Nil,
        Value::map([("node", Value::Int(3))]),
        Value::map([("node", Value::str("x")), ("ev", Value::uint(1))]),
        Value::map([("node", Value::str("x")), ("ticks", Value::str("x"))]),
        Value::map([("t", Value::str("ping")), ("node", Value::str("x"))]),
        Value::map([
            ("t", Value::str("ping")),
            ("node", Value::str("x")),
            (
                "value",
                Value::Array(vec![Value::uint(u64::MAX), Value::uint(u64::MAX)]),
            ),
            ("history", Value::Array(vec![Value::str("x")])),
        ]),
    ];
    for (i, topic) in [&topics.update, &topics.info, &topics.ping, &topics.del]
        .into_iter()
        .enumerate()
    {
        for n in 0..200 {
            let mut buf = vec![0u8; rng.gen_range(0..64)];
            rng.fill_bytes(&mut buf);
            core.receive(&mut st, n, topic, &buf);
        }
        for v in &hostile {
            core.receive(&mut st, 300 + i as u64, topic, &codec::to_vec(v));
        }
        core.poll(&mut st, 400);
    }
    assert_eq!(st.digest(), before);
    assert_eq!(st.node("x").and_then(NodeInfo::tick), None);
}

fn ready(name: &str) -> (State, Core) {
    let mut st = State::new(name, LogLimits::default());
    st.make_ready();
    let core = Core::new(&st, ClusterConfig::default(), 7, None);
    (st, core)
}

/// Messages are read (decoded) without the state, then taken: another
/// node's update is applied only when taken, our own is recognised,
/// garbage is an error with its topic, other topics pass as they came.
#[test]
fn messages_are_read_without_the_state_then_taken() {
    let (mut st, mut core) = ready("a");
    core.start(&mut st, 0);
    let topics = core.topics().clone();
    let ev = |node: &str| UpdateEvent {
        path: path!["x"],
        chain: Chain::single(node.into(), 1),
        value: Some(Value::Int(1)),
        tock: 1,
    };
    let update = |node: &str| {
        Update {
            node: node.into(),
            events: vec![ev(node)],
        }
        .encode()
    };
    let (theirs, ours) = (update("b"), update("a"));
    let m = core.read(&topics.update, &theirs);
    assert!(matches!(&m, Incoming::Update(u) if u.events == [ev("b")]));
    assert!(
        st.root().follow(&path!["x"]).is_none(),
        "not applied when read"
    );
    core.take(&mut st, 1, m);
    assert_eq!(
        st.root().follow(&path!["x"]).and_then(|e| e.data_cloned()),
        Some(Value::Int(1))
    );
    assert!(matches!(core.read(&topics.update, &ours), Incoming::Own));
    assert!(matches!(
        core.read(&topics.info, b"\xc1"),
        Incoming::Bad { topic, .. } if topic == topics.info
    ));
    assert!(matches!(
        core.read(&topics.ping, b"x"),
        Incoming::Other { topic, payload: b"x" } if topic == topics.ping
    ));
}

/// The info messages `core` published so far.
fn infos(core: &mut Core) -> Vec<Info> {
    let topic = core.topics().info.clone();
    core.take_outgoing()
        .into_iter()
        .filter(|(t, _)| *t == topic)
        .map(|(_, p)| Info::decode(&p).expect("our own info"))
        .collect()
}

/// A link coming back makes a node send its ticks asking for an
/// answer; whoever hears that answers with its own ticks at once (not
/// at the next housekeeper's round), without asking in turn.
#[test]
fn a_link_coming_back_asks_for_the_peers_ticks() {
    let (mut a, mut core_a) = ready("a");
    let (mut b, mut core_b) = ready("b");
    core_a.start(&mut a, 0);
    core_b.start(&mut b, 0);
    core_a.poll(&mut a, 1);
    core_b.poll(&mut b, 1);
    let _ = (infos(&mut core_a), infos(&mut core_b));
    let gap = ClusterConfig::default().ping.gap;

    core_a.link_up(10_000);
    core_a.poll(&mut a, 10_000 + gap / 10);
    let sent = infos(&mut core_a);
    let ask = sent
        .iter()
        .find(|i| !i.ticks.is_empty())
        .expect("ticks sent");
    assert!(ask.reply, "{sent:?}");

    let info = core_a.topics().info.clone();
    core_b.receive(&mut b, 10_000 + gap / 10, &info, &ask.encode());
    assert!(core_b.next_deadline() <= 10_000 + 2 * (gap / 10));
    core_b.poll(&mut b, 10_000 + 2 * (gap / 10));
    let answer = infos(&mut core_b);
    let answer = answer
        .iter()
        .find(|i| !i.ticks.is_empty())
        .expect("ticks answered");
    assert!(!answer.reply, "an answer asks for none: {answer:?}");
}

/// Two nodes advertising one client address are noticed (a joining
/// node could not tell them apart).
#[test]
fn two_nodes_advertising_one_address_are_noticed() {
    let (mut st, mut core) = ready("a");
    core.start(&mut st, 0);
    let topic = core.topics().info.clone();
    for (n, addr) in [("b", "h:1"), ("c", "h:2"), ("d", "h:1"), ("d", "h:1")] {
        let mut i = Info::new(n.into(), Some(0));
        i.addr = Some(addr.into());
        core.receive(&mut st, 1, &topic, &i.encode());
    }
    let clashes: Vec<_> = core.addr_clashes.iter().cloned().collect();
    assert_eq!(clashes, vec![("h:1".to_string(), "b".into(), "d".into())]);
}

/// Own events broadcast by `core` so far, as `node:tick` of each.
fn broadcast(core: &mut Core) -> Vec<u64> {
    let topic = core.topics().update.clone();
    core.take_outgoing()
        .into_iter()
        .filter(|(t, _)| *t == topic)
        .flat_map(|(_, p)| Update::decode(&p).expect("our own update").events)
        .map(|e| e.chain.head().tick)
        .collect()
}

#[test]
fn only_changes_written_to_the_log_are_broadcast() {
    let (mut st, mut core) = ready("n1");
    core.allow_broadcast_below(st.log().next_seq());
    core.start(&mut st, 0);
    for i in 0..5 {
        st.local_change(&path![Value::uint(i)], Some(Value::uint(i)))
            .expect("a change");
    }
    core.poll(&mut st, 1);
    assert_eq!(broadcast(&mut core), Vec::<u64>::new());
    // The writer reports the first three on disk.
    core.allow_broadcast_below(st.log().next_seq() - 2);
    core.poll(&mut st, 2);
    assert_eq!(broadcast(&mut core), vec![1, 2, 3]);
    core.allow_broadcast_below(st.log().next_seq());
    core.poll(&mut st, 3);
    assert_eq!(broadcast(&mut core), vec![4, 5]);
}

/// Changes taken by several polls before the messages are taken (a batch
/// of received messages handled under one lock) go out once each, in
/// order, with nothing made after the last poll; and when the log dropped
/// changes before a poll took them, the rest still go out, and the node
/// tells its ticks at once (the others ask for what they lack).
#[test]
fn changes_taken_by_several_polls_go_out_once_in_order() {
    let mut st = State::new(
        "n1",
        LogLimits {
            max_records: 8,
            max_bytes: usize::MAX,
        },
    );
    st.make_ready();
    let mut core = Core::new(&st, ClusterConfig::default(), 7, None);
    core.start(&mut st, 0);
    let _ = core.take_outgoing();
    let change = |st: &mut State, i: u64| {
        st.local_change(&path![Value::uint(i)], Some(Value::uint(i)))
            .expect("a change");
    };
    for i in 1..=3 {
        change(&mut st, i);
    }
    core.poll(&mut st, 1);
    for i in 4..=5 {
        change(&mut st, i);
    }
    core.poll(&mut st, 1);
    change(&mut st, 6);
    assert_eq!(broadcast(&mut core), vec![1, 2, 3, 4, 5]);
    assert_eq!(broadcast(&mut core), Vec::<u64>::new());
    core.poll(&mut st, 2);
    for i in 7..=20 {
        change(&mut st, i);
    }
    core.poll(&mut st, 3);
    let out = core.take_outgoing();
    let topics = core.topics().clone();
    let sent: Vec<u64> = out
        .iter()
        .filter(|(t, _)| *t == topics.update)
        .flat_map(|(_, p)| Update::decode(p).expect("our own update").events)
        .map(|e| e.chain.head().tick)
        .collect();
    assert_eq!(sent, [vec![6], (13..=20).collect()].concat());
    let told = out
        .iter()
        .filter(|(t, _)| *t == topics.info)
        .map(|(_, p)| Info::decode(p).expect("our own info"))
        .any(|i| !i.ticks.is_empty());
    assert!(told, "ticks told at once");
}

/// A node that skipped ticks at its start tells the others; they stop
/// counting them as missing, and one that holds some of them (the
/// sender's files lost them) sends them back.
#[test]
fn skipped_ticks_are_announced_learned_and_sent_back_when_held() {
    let (mut a, core_a) = ready("a");
    let (mut b, mut core_b) = ready("b");
    // `a` made changes 1..=3; `b` got them. Then `a` lost change 3
    // and resumed above its reservation 10.
    let mut events = Vec::new();
    for i in 1..=3u64 {
        events.push(
            (*a.local_change(&path![Value::uint(i)], Some(Value::uint(i)))
                .expect("a change"))
            .clone(),
        );
    }
    for e in &events {
        b.apply(e.clone());
    }
    let (mut a, mut core_a) = {
        drop((a, core_a));
        let mut a = State::new("a", LogLimits::default());
        a.make_ready();
        for e in &events[..2] {
            a.replay(e.clone());
        }
        let skipped = crate::persist::recover::resume_above_reservation(&mut a, 10);
        assert_eq!(skipped.to_string(), "3-10");
        let core = Core::new(&a, ClusterConfig::default(), 8, None);
        (a, core)
    };
    assert!(a.node("a").is_some_and(|n| n.missing().is_empty()));
    core_a.start(&mut a, 0);
    core_b.start(&mut b, 0);
    b.saw_node_tick("a", 10);
    assert_eq!(
        b.node("a").map(|n| n.missing().to_string()),
        Some("4-10".into())
    );
    // Deliver a's messages to b until b answers.
    let mut back = Vec::new();
    for now in (0..5_000).step_by(50) {
        core_a.poll(&mut a, now);
        for (topic, payload) in core_a.take_outgoing() {
            core_b.receive(&mut b, now, &topic, &payload);
        }
        core_b.poll(&mut b, now);
        let topic = core_b.topics().update.clone();
        for (t, p) in core_b.take_outgoing() {
            if t == topic {
                back.extend(Update::decode(&p).expect("an update").events);
            }
        }
        if !back.is_empty() {
            break;
        }
    }
    assert!(
        b.node("a").is_some_and(|n| n.missing().is_empty()),
        "b still misses a's skipped ticks"
    );
    assert_eq!(back.len(), 1, "b sends back what it holds: {back:?}");
    assert_eq!(back[0].chain.head().tick, 3);
    core_a.receive(
        &mut a,
        5_000,
        &core_b.topics().update.clone(),
        &Update {
            node: "b".into(),
            events: back,
        }
        .encode(),
    );
    let back_here = a.entry(&[Value::uint(3)]).and_then(|e| e.data_cloned());
    assert_eq!(
        back_here,
        Some(Value::uint(3)),
        "a got its lost change back"
    );
}

/// Forged events and ticks from the bus — a broadcast, a repair answer,
/// an info message — never raise this node's counter, and its writes go
/// on.
#[test]
fn forged_ticks_from_the_bus_are_ignored() {
    let (mut victim, mut core) = ready("victim");
    core.start(&mut victim, 0);
    victim
        .local_change(&path!["a"], Some(Value::uint(1)))
        .expect("a change");
    let topics = core.topics().clone();
    let forged = 1u64 << 62;
    let ev = |tick| UpdateEvent {
        path: distkv_model::Path::new(vec![Value::str("b")]),
        chain: Chain::single(NodeName::from("victim"), tick),
        value: Some(Value::uint(9)),
        tock: 5,
    };
    // A broadcast or a repair answer (both are update messages).
    let u = Update {
        node: "evil".into(),
        events: vec![ev(forged), ev(2 + MAX_TICK_LEAP)],
    };
    core.receive(&mut victim, 1, &topics.update, &u.encode());
    // Ticks and known/deleted ranges in an info message.
    let mut i = Info::new("evil".into(), Some(3));
    i.ticks = vec![("victim".into(), forged)];
    i.known.insert(&NodeName::from("victim"), forged);
    i.deleted.insert(&NodeName::from("victim"), forged - 1);
    core.receive(&mut victim, 2, &topics.info, &i.encode());
    core.poll(&mut victim, 3);
    assert_eq!(victim.tick(), Some(1));
    assert!(victim.entry(&[Value::str("b")]).is_none());
    let e = victim
        .local_change(&path!["c"], Some(Value::uint(2)))
        .expect("writes go on");
    assert_eq!(e.chain.head().tick, 2);
}

/// A change of a node that is not running — restored with `update` —
/// reaches the other nodes although nobody broadcasts it: the node holding
/// it tells its ticks soon, well within one ping cycle, and the others ask.
#[test]
fn a_restored_change_of_a_stopped_node_reaches_the_others() {
    let (mut a, mut core_a) = ready("a");
    let (mut b, mut core_b) = ready("b");
    core_a.start(&mut a, 0);
    core_b.start(&mut b, 0);
    let pump = |a: &mut State, ca: &mut Core, b: &mut State, cb: &mut Core, from: u64, to: u64| {
        for now in (from..to).step_by(50) {
            ca.poll(a, now);
            for (topic, payload) in ca.take_outgoing() {
                cb.receive(b, now, &topic, &payload);
            }
            cb.poll(b, now);
            for (topic, payload) in cb.take_outgoing() {
                ca.receive(a, now, &topic, &payload);
            }
        }
    };
    // The start's tick exchange is over.
    pump(&mut a, &mut core_a, &mut b, &mut core_b, 0, 3_000);
    let restored = UpdateEvent {
        path: distkv_model::path!["restored"],
        chain: Chain::single("gone".into(), 7),
        value: Some(Value::uint(42)),
        tock: 5,
    };
    assert!(matches!(
        a.apply(restored),
        crate::state::Applied::Stored(_)
    ));
    // Less than a ping cycle (10 s): no housekeeper round helps.
    pump(&mut a, &mut core_a, &mut b, &mut core_b, 3_000, 6_000);
    assert_eq!(
        b.entry(&[Value::str("restored")])
            .and_then(|e| e.data_cloned()),
        Some(Value::uint(42)),
        "the restored change stayed on the node that took it"
    );
}
