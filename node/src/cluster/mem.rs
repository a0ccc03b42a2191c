//! An in-memory, seeded, fault-injecting bus for tests and simulations.
//!
//! Two layers:
//!
//! * [`MemNet`] — a pure, synchronous, deterministic network with virtual
//!   time (milliseconds as `u64`). It knows nothing about tokio; a
//!   discrete-event simulation drives it by calling [`MemNet::send`] and
//!   [`MemNet::deliver_due`] with its own clock. Every random choice comes
//!   from one seeded [`StdRng`] and every iteration is over ordered
//!   collections, so the same seed and the same calls give the same
//!   deliveries, byte for byte and in the same order.
//! * [`MemHub`] / [`MemBus`] — an async adapter implementing [`Bus`] over a
//!   shared `MemNet`, for in-process multi-node tests under tokio. Virtual
//!   time is milliseconds since the hub started, read from
//!   [`tokio::time::Instant`], so it works with a paused tokio clock.
//!
//! Faults: each copy of a message is independently dropped, duplicated and
//! delayed by a uniformly random delay; reordering follows from the
//! independent delays. Partitions and crashed nodes lose the copies that
//! are in flight across them.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use crate::bus::{topic_matches, Bus, Delivery, SUBSCRIPTION_QUEUE};

/// Fault settings of a [`MemNet`]: probabilities in `[0, 1]`, delays in
/// virtual milliseconds.
///
/// The default is a perfect network: nothing lost, nothing duplicated, no
/// delay. Reordering is not a separate setting; it follows from the
/// independent random delay of every copy.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Probability that a copy to another endpoint is lost. The sender's
    /// own copy is never lost.
    pub drop: f64,
    /// Probability that a copy to another endpoint arrives twice (each
    /// copy with its own delay).
    pub duplicate: f64,
    /// Smallest delay of a copy, in milliseconds.
    pub min_delay: u64,
    /// Largest delay of a copy, in milliseconds (inclusive; a value below
    /// `min_delay` counts as `min_delay`).
    pub max_delay: u64,
}

/// Counters of a [`MemNet`], for test reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Messages accepted by [`MemNet::send`] (from an endpoint that was
    /// up), counted once however many copies they made.
    pub sent: u64,
    /// Copies handed out by [`MemNet::deliver_due`].
    pub delivered: u64,
    /// Copies lost: randomly dropped, or in flight across a new partition
    /// or to a node that went down.
    pub dropped: u64,
    /// Extra copies made by random duplication.
    pub duplicated: u64,
}

/// One endpoint of a [`MemNet`].
#[derive(Debug, Clone, Copy)]
struct Endpoint {
    up: bool,
}

/// A copy of a message on its way to one recipient.
#[derive(Debug)]
struct InFlight {
    due: u64,
    seq: u64,
    from: String,
    to: String,
    delivery: Delivery,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    /// Reversed, so that the max-heap `BinaryHeap` pops the earliest
    /// (due time, sequence number) first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// A pure, synchronous, deterministic network with virtual time.
///
/// Endpoints are node names. Time is whatever the caller passes in
/// (milliseconds); the net only remembers when each copy is due. See the
/// module docs for the fault model.
#[derive(Debug)]
pub struct MemNet {
    rng: StdRng,
    faults: Faults,
    endpoints: BTreeMap<String, Endpoint>,
    /// Partition group of each listed node; unlisted nodes are in group 0.
    groups: BTreeMap<String, usize>,
    /// One-way cuts: messages from the first to the second are lost.
    cuts: std::collections::BTreeSet<(String, String)>,
    queue: BinaryHeap<InFlight>,
    seq: u64,
    stats: NetStats,
}

impl MemNet {
    /// Creates an empty net whose random choices all come from `seed`.
    pub fn new(seed: u64, faults: Faults) -> MemNet {
        MemNet {
            rng: StdRng::seed_from_u64(seed),
            faults,
            endpoints: BTreeMap::new(),
            groups: BTreeMap::new(),
            cuts: Default::default(),
            queue: BinaryHeap::new(),
            seq: 0,
            stats: NetStats::default(),
        }
    }

    /// Replaces the fault settings; they apply to later sends only (copies
    /// in flight keep their delays).
    pub fn set_faults(&mut self, f: Faults) {
        self.faults = f;
    }

    /// The current fault settings.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Registers an endpoint, up. Idempotent: joining again changes
    /// nothing (a down node stays down).
    pub fn join(&mut self, node: &str) {
        if !self.endpoints.contains_key(node) {
            self.endpoints
                .insert(node.to_owned(), Endpoint { up: true });
        }
    }

    /// The registered endpoints, in name order.
    pub fn endpoints(&self) -> impl Iterator<Item = &str> {
        self.endpoints.keys().map(String::as_str)
    }

    fn group(&self, node: &str) -> usize {
        self.groups.get(node).copied().unwrap_or(0)
    }

    /// Whether `a` can currently reach `b` (same partition group, no
    /// one-way cut).
    pub fn reachable(&self, a: &str, b: &str) -> bool {
        self.group(a) == self.group(b) && !self.cuts.contains(&(a.to_string(), b.to_string()))
    }

    fn random_delay(&mut self) -> u64 {
        let lo = self.faults.min_delay;
        let hi = self.faults.max_delay.max(lo);
        self.rng.gen_range(lo..=hi)
    }

    /// A random event of probability `p`. Always draws one number, so the
    /// random sequence does not depend on the fault settings' values;
    /// `p <= 0` (or NaN) never happens, `p >= 1` always does.
    fn chance(&mut self, p: f64) -> bool {
        self.rng.gen::<f64>() < p
    }

    fn enqueue(&mut self, due: u64, from: &str, to: &str, topic: &str, payload: &Bytes) {
        self.seq += 1;
        self.queue.push(InFlight {
            due,
            seq: self.seq,
            from: from.to_owned(),
            to: to.to_owned(),
            delivery: Delivery {
                topic: topic.to_owned(),
                payload: payload.clone(),
            },
        });
    }

    /// Publishes at virtual time `now`: one copy per endpoint that is up
    /// and currently reachable from `from`, the sender itself always
    /// included (own messages come back, see the [`Bus`] contract). Each
    /// copy to another endpoint is independently dropped (probability
    /// `drop`) or else duplicated (probability `duplicate`); every copy,
    /// the sender's own included, is delayed uniformly in
    /// `[min_delay, max_delay]`. The sender's own copy is never dropped or
    /// duplicated. Nothing is sent if `from` is down or has not joined.
    pub fn send(&mut self, now: u64, from: &str, topic: &str, payload: Bytes) {
        if !self.is_up(from) {
            return;
        }
        self.stats.sent += 1;
        let recipients: Vec<String> = self
            .endpoints
            .iter()
            .filter(|(name, ep)| ep.up && self.reachable(from, name))
            .map(|(name, _)| name.clone())
            .collect();
        for to in recipients {
            let own = to == from;
            let (drop, duplicate) = (self.faults.drop, self.faults.duplicate);
            if !own && self.chance(drop) {
                self.stats.dropped += 1;
                continue;
            }
            let copies = if !own && self.chance(duplicate) {
                self.stats.duplicated += 1;
                2
            } else {
                1
            };
            for _ in 0..copies {
                let due = now.saturating_add(self.random_delay());
                self.enqueue(due, from, &to, topic, &payload);
            }
        }
    }

    /// Drops every in-flight copy for which `lost` is true, counting them.
    fn lose_in_flight(&mut self, lost: impl Fn(&MemNet, &InFlight) -> bool) {
        let queue = std::mem::take(&mut self.queue);
        let before = queue.len();
        let kept: BinaryHeap<InFlight> = queue.into_iter().filter(|m| !lost(self, m)).collect();
        self.stats.dropped += (before - kept.len()) as u64;
        self.queue = kept;
    }

    /// Splits the endpoints into groups: endpoints in different groups
    /// cannot reach each other, and endpoints not listed (including ones
    /// that join later) form one more group together. A name listed twice
    /// belongs to its last group. Replaces any earlier partition. Copies
    /// already in flight across the new cut are lost.
    pub fn partition(&mut self, groups: &[Vec<String>]) {
        self.groups.clear();
        for (i, group) in groups.iter().enumerate() {
            for node in group {
                self.groups.insert(node.clone(), i + 1);
            }
        }
        self.lose_in_flight(|net, m| !net.reachable(&m.from, &m.to));
    }

    /// Cuts the link from `from` to `to` only (an asymmetric partition:
    /// `to` still reaches `from`). Messages in flight on it are lost.
    pub fn cut_one_way(&mut self, from: &str, to: &str) {
        self.cuts.insert((from.to_string(), to.to_string()));
        self.lose_in_flight(|net, m| !net.reachable(&m.from, &m.to));
    }

    /// Everyone reaches everyone again.
    pub fn heal(&mut self) {
        self.groups.clear();
        self.cuts.clear();
    }

    /// Takes a node down (crash) or up again. A down node neither sends nor
    /// receives; copies in flight to it are lost when it goes down (copies
    /// it sent before are already on the wire and still arrive). Unknown
    /// nodes are joined first.
    pub fn set_up(&mut self, node: &str, up: bool) {
        self.join(node);
        if let Some(ep) = self.endpoints.get_mut(node) {
            ep.up = up;
        }
        if !up {
            self.lose_in_flight(|_, m| m.to == node);
        }
    }

    /// Whether `node` has joined and is up.
    pub fn is_up(&self, node: &str) -> bool {
        self.endpoints.get(node).is_some_and(|ep| ep.up)
    }

    /// The earliest due time of any copy in flight.
    pub fn next_due(&self) -> Option<u64> {
        self.queue.peek().map(|m| m.due)
    }

    /// How many copies are in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Removes and returns every copy due at or before `now`, as
    /// (recipient, delivery), ordered by (due time, sequence number) — a
    /// deterministic order.
    pub fn deliver_due(&mut self, now: u64) -> Vec<(String, Delivery)> {
        let mut out = Vec::new();
        while self.queue.peek().is_some_and(|m| m.due <= now) {
            if let Some(m) = self.queue.pop() {
                out.push((m.to, m.delivery));
            }
        }
        self.stats.delivered += out.len() as u64;
        out
    }

    /// The counters so far.
    pub fn stats(&self) -> NetStats {
        self.stats
    }
}

/// One subscription of a hub endpoint.
struct Subscription {
    filter: String,
    tx: mpsc::Sender<Delivery>,
}

/// The per-node side of a [`MemHub`]: subscriptions, link counter, drops.
struct HubEndpoint {
    subs: Mutex<Vec<Subscription>>,
    links: watch::Sender<u64>,
    dropped: AtomicU64,
}

impl HubEndpoint {
    fn new() -> HubEndpoint {
        HubEndpoint {
            subs: Mutex::new(Vec::new()),
            links: watch::Sender::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    fn bump_links(&self) {
        self.links.send_modify(|n| *n += 1);
    }

    /// Hands `d` to every matching subscription; a full queue drops and
    /// counts, a closed one ends the subscription.
    fn route(&self, d: &Delivery) {
        let mut subs = self.subs.lock();
        subs.retain(|sub| {
            if !topic_matches(&sub.filter, &d.topic) {
                return !sub.tx.is_closed();
            }
            match sub.tx.try_send(d.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, AtomicOrdering::Relaxed);
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }
}

/// A shared in-memory network for in-process multi-node tests under tokio.
///
/// Wraps a [`MemNet`] whose virtual time is the milliseconds since the hub
/// started (from [`tokio::time::Instant`], so a paused tokio clock works);
/// a background task delivers copies at their due times. [`MemHub::bus`]
/// hands out the per-node [`Bus`] endpoints. The task ends when the last
/// `Arc<MemHub>` (buses hold one each) is dropped.
pub struct MemHub {
    net: Mutex<MemNet>,
    endpoints: Mutex<BTreeMap<String, Arc<HubEndpoint>>>,
    start: Instant,
    /// Wakes the delivery task: a publish may have made an earlier due
    /// time, or the hub is going away.
    wake: Arc<Notify>,
}

impl MemHub {
    /// Starts the hub and its delivery task. Must be called within a tokio
    /// runtime (the task is `tokio::spawn`ed).
    pub fn start(seed: u64, faults: Faults) -> Arc<MemHub> {
        let hub = Arc::new(MemHub {
            net: Mutex::new(MemNet::new(seed, faults)),
            endpoints: Mutex::new(BTreeMap::new()),
            start: Instant::now(),
            wake: Arc::new(Notify::new()),
        });
        tokio::spawn(deliver_loop(Arc::downgrade(&hub), hub.wake.clone()));
        hub
    }

    /// The current virtual time: milliseconds since the hub started.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn endpoint(&self, node: &str) -> Arc<HubEndpoint> {
        self.endpoints
            .lock()
            .entry(node.to_owned())
            .or_insert_with(|| Arc::new(HubEndpoint::new()))
            .clone()
    }

    /// The bus endpoint for `node`, joining the net if it has not yet.
    /// Several buses for one node share its subscriptions and counters.
    pub fn bus(self: &Arc<Self>, node: &str) -> Arc<MemBus> {
        self.net.lock().join(node);
        Arc::new(MemBus {
            hub: self.clone(),
            node: node.to_owned(),
            endpoint: self.endpoint(node),
        })
    }

    /// Splits the nodes into groups that cannot reach each other (see
    /// [`MemNet::partition`]).
    pub fn partition(&self, groups: &[Vec<String>]) {
        self.net.lock().partition(groups);
    }

    /// Heals every partition and bumps every endpoint's
    /// [`links`](Bus::links) counter, as links came back.
    pub fn heal(&self) {
        self.net.lock().heal();
        for ep in self.endpoints.lock().values() {
            ep.bump_links();
        }
    }

    /// Takes `node` down (crash) or up again (see [`MemNet::set_up`]);
    /// coming up bumps that node's [`links`](Bus::links) counter.
    pub fn set_up(&self, node: &str, up: bool) {
        self.net.lock().set_up(node, up);
        if up {
            self.endpoint(node).bump_links();
        }
    }

    /// Replaces the fault settings for later publications.
    pub fn set_faults(&self, f: Faults) {
        self.net.lock().set_faults(f);
    }

    /// The net's counters so far.
    pub fn stats(&self) -> NetStats {
        self.net.lock().stats()
    }

    /// Delivers everything due now; returns the next due time.
    fn deliver_now(&self) -> Option<u64> {
        let (due, next) = {
            let mut net = self.net.lock();
            let due = net.deliver_due(self.now());
            (due, net.next_due())
        };
        for (to, d) in due {
            let ep = self.endpoints.lock().get(&to).cloned();
            if let Some(ep) = ep {
                ep.route(&d);
            }
        }
        next
    }
}

impl Drop for MemHub {
    fn drop(&mut self) {
        // Let the delivery task notice that the hub is gone.
        self.wake.notify_one();
    }
}

/// The hub's delivery task: delivers what is due, then sleeps until the
/// next due time or a wake-up; ends once the hub is dropped.
async fn deliver_loop(hub: Weak<MemHub>, wake: Arc<Notify>) {
    loop {
        let (start, next) = {
            let Some(hub) = hub.upgrade() else { return };
            (hub.start, hub.deliver_now())
        };
        // A `notify_one` that happened since is kept as a permit, so no
        // publish is missed between delivering and waiting.
        match next {
            Some(due) => {
                let at = start + Duration::from_millis(due);
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

/// One node's [`Bus`] endpoint on a [`MemHub`].
pub struct MemBus {
    hub: Arc<MemHub>,
    node: String,
    endpoint: Arc<HubEndpoint>,
}

impl MemBus {
    /// The node this bus belongs to.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The hub this bus is on.
    pub fn hub(&self) -> &Arc<MemHub> {
        &self.hub
    }
}

impl Bus for MemBus {
    fn publish(&self, topic: &str, payload: Bytes) {
        {
            let mut net = self.hub.net.lock();
            if !net.is_up(&self.node) {
                self.endpoint.dropped.fetch_add(1, AtomicOrdering::Relaxed);
                return;
            }
            net.send(self.hub.now(), &self.node, topic, payload);
        }
        self.hub.wake.notify_one();
    }

    fn subscribe(&self, filter: &str) -> mpsc::Receiver<Delivery> {
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_QUEUE);
        self.endpoint.subs.lock().push(Subscription {
            filter: filter.to_owned(),
            tx,
        });
        rx
    }

    fn links(&self) -> watch::Receiver<u64> {
        self.endpoint.links.subscribe()
    }

    fn dropped(&self) -> u64 {
        self.endpoint.dropped.load(AtomicOrdering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn net(seed: u64, faults: Faults, nodes: &[&str]) -> MemNet {
        let mut net = MemNet::new(seed, faults);
        for n in nodes {
            net.join(n);
        }
        net
    }

    /// Recipients of everything due by `now`, in delivery order.
    fn recipients(net: &mut MemNet, now: u64) -> Vec<String> {
        net.deliver_due(now).into_iter().map(|(to, _)| to).collect()
    }

    /// Runs a fixed scenario and records every delivery with its time.
    fn scenario(seed: u64) -> Vec<(u64, String, Delivery)> {
        let faults = Faults {
            drop: 0.2,
            duplicate: 0.2,
            min_delay: 0,
            max_delay: 100,
        };
        let mut net = net(seed, faults, &["a", "b", "c", "d"]);
        let mut out = Vec::new();
        for i in 0..40u64 {
            let from = ["a", "b", "c", "d"][(i % 4) as usize];
            net.send(i * 7, from, "t/x", Bytes::from(format!("m{i}")));
            for (to, d) in net.deliver_due(i * 7) {
                out.push((i * 7, to, d));
            }
        }
        while let Some(t) = net.next_due() {
            for (to, d) in net.deliver_due(t) {
                out.push((t, to, d));
            }
        }
        out
    }

    #[test]
    fn same_seed_same_deliveries_other_seed_differs() {
        let a = scenario(42);
        assert!(!a.is_empty());
        assert_eq!(a, scenario(42));
        assert_ne!(a, scenario(43));
    }

    #[test]
    fn drop_all_keeps_own_copy() {
        let faults = Faults {
            drop: 1.0,
            ..Faults::default()
        };
        let mut net = net(1, faults, &["a", "b", "c"]);
        net.send(0, "a", "t", Bytes::from_static(b"x"));
        assert_eq!(recipients(&mut net, 0), names(&["a"]));
        let s = net.stats();
        assert_eq!((s.sent, s.delivered, s.dropped), (1, 1, 2));
    }

    #[test]
    fn duplicate_all_doubles_other_copies() {
        let faults = Faults {
            duplicate: 1.0,
            ..Faults::default()
        };
        let mut net = net(1, faults, &["a", "b", "c"]);
        net.send(0, "b", "t", Bytes::from_static(b"x"));
        let mut got = recipients(&mut net, 0);
        got.sort();
        assert_eq!(got, names(&["a", "a", "b", "c", "c"]));
        assert_eq!(net.stats().duplicated, 2);
    }

    #[test]
    fn partition_blocks_across_groups_and_heal_restores() {
        let mut net = net(1, Faults::default(), &["a", "b", "c", "d"]);
        // c and d are unlisted: they form a group of their own.
        net.partition(&[names(&["a", "b"])]);
        net.send(0, "a", "t", Bytes::new());
        assert_eq!(recipients(&mut net, 0), names(&["a", "b"]));
        net.send(0, "c", "t", Bytes::new());
        assert_eq!(recipients(&mut net, 0), names(&["c", "d"]));
        net.partition(&[names(&["a"]), names(&["b"])]);
        net.send(0, "a", "t", Bytes::new());
        assert_eq!(recipients(&mut net, 0), names(&["a"]));
        net.heal();
        net.send(1, "a", "t", Bytes::new());
        assert_eq!(recipients(&mut net, 1), names(&["a", "b", "c", "d"]));
    }

    #[test]
    fn a_one_way_cut_blocks_one_direction_until_healed() {
        let mut net = net(1, Faults::default(), &["a", "b", "c"]);
        net.cut_one_way("a", "b");
        net.send(0, "a", "t", Bytes::new());
        assert_eq!(recipients(&mut net, 0), names(&["a", "c"]));
        net.send(0, "b", "t", Bytes::new());
        assert_eq!(recipients(&mut net, 0), names(&["a", "b", "c"]));
        net.heal();
        net.send(1, "a", "t", Bytes::new());
        assert_eq!(recipients(&mut net, 1), names(&["a", "b", "c"]));
    }

    #[test]
    fn down_node_neither_sends_nor_receives() {
        let mut net = net(1, Faults::default(), &["a", "b", "c"]);
        net.set_up("c", false);
        assert!(!net.is_up("c"));
        net.send(0, "a", "t", Bytes::new());
        assert_eq!(recipients(&mut net, 0), names(&["a", "b"]));
        net.send(0, "c", "t", Bytes::new());
        assert_eq!(net.next_due(), None);
        assert_eq!(net.stats().sent, 1);
        net.set_up("c", true);
        net.send(0, "c", "t", Bytes::new());
        assert_eq!(recipients(&mut net, 0), names(&["a", "b", "c"]));
    }

    #[test]
    fn in_flight_copies_are_lost_across_a_new_cut_or_to_a_down_node() {
        let faults = Faults {
            min_delay: 100,
            max_delay: 100,
            ..Faults::default()
        };
        let mut net = net(1, faults, &["a", "b", "c"]);
        net.send(0, "a", "t", Bytes::new());
        assert_eq!(net.in_flight(), 3);
        net.partition(&[names(&["a", "c"])]);
        net.heal();
        assert_eq!(recipients(&mut net, 99), Vec::<String>::new());
        assert_eq!(recipients(&mut net, 100), names(&["a", "c"]));

        net.send(200, "b", "t", Bytes::new());
        net.set_up("c", false);
        net.set_up("c", true);
        assert_eq!(recipients(&mut net, 300), names(&["a", "b"]));
        assert_eq!(net.stats().dropped, 2);
    }

    #[test]
    fn deliveries_are_ordered_by_due_time_then_sequence() {
        let mut net = net(1, Faults::default(), &["a"]);
        for (i, delay) in [300u64, 100, 200, 100].into_iter().enumerate() {
            net.set_faults(Faults {
                min_delay: delay,
                max_delay: delay,
                ..Faults::default()
            });
            net.send(0, "a", "t", Bytes::from(vec![i as u8]));
        }
        assert_eq!(net.next_due(), Some(100));
        let order: Vec<u8> = net
            .deliver_due(1000)
            .into_iter()
            .map(|(_, d)| d.payload[0])
            .collect();
        assert_eq!(order, vec![1, 3, 2, 0]);
    }

    #[test]
    fn random_delays_reorder_and_stay_in_range() {
        let faults = Faults {
            min_delay: 10,
            max_delay: 50,
            ..Faults::default()
        };
        let mut net = net(7, faults, &["a"]);
        for i in 0..50u8 {
            net.send(0, "a", "t", Bytes::from(vec![i]));
        }
        assert_eq!(net.deliver_due(9), Vec::new());
        let order: Vec<u8> = net
            .deliver_due(50)
            .into_iter()
            .map(|(_, d)| d.payload[0])
            .collect();
        assert_eq!(order.len(), 50);
        assert!(order.windows(2).any(|w| w[0] > w[1]), "some reordering");
    }

    const WAIT: Duration = Duration::from_secs(5);

    async fn recv(rx: &mut mpsc::Receiver<Delivery>) -> Delivery {
        match tokio::time::timeout(WAIT, rx.recv()).await {
            Ok(Some(d)) => d,
            other => panic!("no delivery: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn hub_delivers_to_all_subscribers_own_included() {
        let hub = MemHub::start(1, Faults::default());
        let buses: Vec<_> = ["a", "b", "c"].iter().map(|n| hub.bus(n)).collect();
        let mut subs: Vec<_> = buses.iter().map(|b| b.subscribe(":distkv/+")).collect();
        let mut other = buses[1].subscribe("other/#");
        buses[0].publish(":distkv/update", Bytes::from_static(b"hello"));
        for rx in &mut subs {
            let d = recv(rx).await;
            assert_eq!(d.topic, ":distkv/update");
            assert_eq!(d.payload, Bytes::from_static(b"hello"));
        }
        assert!(other.try_recv().is_err(), "filter does not match");
        assert_eq!(hub.stats().delivered, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn hub_partition_blocks_and_heal_bumps_links() {
        let hub = MemHub::start(1, Faults::default());
        let (a, b) = (hub.bus("a"), hub.bus("b"));
        let mut ra = a.subscribe("#");
        let mut rb = b.subscribe("#");
        let mut links = b.links();
        assert_eq!(*links.borrow_and_update(), 0);

        hub.partition(&[names(&["a"]), names(&["b"])]);
        a.publish("t", Bytes::from_static(b"1"));
        recv(&mut ra).await;
        assert_eq!(hub.stats().delivered, 1, "b got no copy");
        assert!(rb.try_recv().is_err());

        hub.heal();
        assert!(links.has_changed().unwrap_or(false));
        assert_eq!(*links.borrow_and_update(), 1);
        a.publish("t", Bytes::from_static(b"2"));
        assert_eq!(recv(&mut rb).await.payload, Bytes::from_static(b"2"));
    }

    #[tokio::test(start_paused = true)]
    async fn hub_down_node_counts_dropped_and_up_bumps_links() {
        let hub = MemHub::start(1, Faults::default());
        let b = hub.bus("b");
        let links = b.links();
        hub.set_up("b", false);
        b.publish("t", Bytes::new());
        assert_eq!(b.dropped(), 1);
        hub.set_up("b", true);
        assert_eq!(*links.borrow(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn hub_respects_delays() {
        let delay = 200;
        let hub = MemHub::start(
            1,
            Faults {
                min_delay: delay,
                max_delay: delay,
                ..Faults::default()
            },
        );
        let a = hub.bus("a");
        let mut rx = a.subscribe("#");
        let t0 = Instant::now();
        a.publish("t", Bytes::new());
        assert!(rx.try_recv().is_err());
        recv(&mut rx).await;
        // Virtual time has millisecond resolution: allow the rounding.
        assert!(t0.elapsed() >= Duration::from_millis(delay - 1));
    }

    #[tokio::test(start_paused = true)]
    async fn hub_task_ends_when_hub_is_dropped() {
        let metrics = tokio::runtime::Handle::current().metrics();
        let before = metrics.num_alive_tasks();
        let hub = MemHub::start(1, Faults::default());
        assert_eq!(metrics.num_alive_tasks(), before + 1);
        drop(hub);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(metrics.num_alive_tasks(), before);
    }
}
