//! The replication protocol as a pure state machine.
//!
//! [`Core`] owns no state and does no I/O: the caller passes the node's
//! [`State`], the current time (ms, any monotonic origin) and the messages
//! it took off the bus; `Core` applies what arrived, and queues what to
//! publish ([`Core::take_outgoing`]) and what the caller must do
//! ([`Notice`]). The async node ([`super::node`]) and the seeded simulation
//! drive the very same code.
//!
//! The protocol (DistKV's roles and guarantees, with our message formats from [`super::msg`]):
//! * **Replication:** every event in the event log whose chain head is this
//!   node is broadcast on `update`, batched (whatever accumulated since the
//!   last poll, at most [`ClusterConfig::batch`] events per message).
//! * **Election:** the main [`Actor`] pings on `ping` with `(tock, tick)`;
//!   the housekeeper it elects each cycle broadcasts every node's tick
//!   (`info.ticks`), which is how a node notices it missed something even
//!   when nothing else is happening (anti-entropy).
//! * **Repair:** a node that learns of ticks it lacks asks for them
//!   (`info.missing`, after a short random delay so a cluster asks once);
//!   nodes holding them answer with the entries on `update`, or say they
//!   are superseded or deleted (`info.known`/`deleted`), again after a
//!   random delay, skipping ticks someone else answered meanwhile.
//! * **Split recovery:** a healed split — noticed by the actor from
//!   incompatible ping histories, or by the bus when a link comes back —
//!   makes every node broadcast its ticks, which starts the repair above
//!   on both sides.

use std::collections::BTreeMap;

use bytes::Bytes;
use distkv_log::Seq;
use distkv_model::chain::MAX_COUNTER;
use distkv_model::codec;
use distkv_model::{NodeName, NodeSet, RangeSet, UpdateEvent, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::actor::{Actor, ActorConfig, ActorEvent, ActorMsg, PingValue};
use super::msg::{encode_updates, peek_sender, Info, Topics, Update, BUS_LIMITS};
use crate::state::{Reporter, State};

/// How many heartbeats repeat the ticks a node skipped at its start.
const SKIP_BEATS: u32 = 5;

/// Where the deleter group lives, below the meta root `None`:
/// `(None, "actor", "del")`, whose value is `{nodes: [name…]}`.
pub const DELETER_GROUP: [&str; 2] = ["actor", "del"];

/// The node names in a deleter-group value (`{nodes: [name…]}`).
pub fn deleter_names(value: Option<&Value>) -> impl Iterator<Item = &str> {
    value
        .and_then(|v| v.get("nodes"))
        .and_then(Value::as_array)
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_str)
}

/// Settings of the replication protocol.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Topic root, e.g. `:distkv`.
    pub root: String,
    /// The main actor (`server.ping`): its `cycle` is also the period of
    /// the background repair, its `gap` the scale of the random delays.
    pub ping: ActorConfig,
    /// The delete actor (`server.delete`): the deleter group elects a
    /// housekeeper on `del` that decides when tombstones may be purged.
    pub delete: ActorConfig,
    /// Most events in one `update` message.
    pub batch: usize,
    /// Most entries one repair round sends before yielding.
    pub resend_max: usize,
    /// After a start with ticks of its own missing (a crash), how long a
    /// node waits for others to send them before declaring the rest never
    /// used (ms).
    pub own_gap_grace: u64,
    /// How long a node without data waits for a ready peer before the
    /// cluster is taken to be new (ms); the smallest name among the nodes
    /// seen then starts it.
    pub join_wait: u64,
}

impl Default for ClusterConfig {
    fn default() -> ClusterConfig {
        ClusterConfig {
            root: ":distkv".into(),
            ping: ActorConfig::main(),
            delete: ActorConfig::delete(),
            batch: 1000,
            resend_max: 2000,
            own_gap_grace: 30_000,
            join_wait: 15_000,
        }
    }
}

/// Something the caller of [`Core`] must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// This node has no data yet and `node` (client address `addr`, if it
    /// told) is ready: fetch the state from it.
    Fetch {
        /// The ready node.
        node: NodeName,
        /// Its client address, `host:port`.
        addr: Option<String>,
    },
    /// No node of the cluster has data: this one starts it.
    Bootstrap,
    /// Another node uses our name.
    NameCollision,
}

/// The replication protocol of one node.
pub struct Core {
    me: NodeName,
    cfg: ClusterConfig,
    topics: Topics,
    actor: Actor,
    rng: StdRng,
    /// Next event-log record to look at for broadcasting.
    next_seq: Seq,
    /// Records from here on are not written to the node's log yet and are
    /// not broadcast ([`Core::allow_broadcast_below`]).
    unwritten: Seq,
    /// Own ticks this node declared never used when it started, and for how
    /// many more heartbeats to say so.
    skipped: (RangeSet, u32),
    out: Vec<(String, Bytes)>,
    notices: Vec<Notice>,
    /// Client address announced in our pings.
    addr: Option<String>,
    /// Missing ticks somebody (we or another node) asked for this round.
    asked: NodeSet,
    /// Of those, what other nodes asked for since `others_since`: counted
    /// as asked only until `others_check_at` (a gap later) unless answers
    /// come in meanwhile. The asker's request may not have reached the
    /// holder (after a partition, links come back one by one): then we
    /// ask ourselves, on our broker, instead of waiting for the next
    /// round.
    others_asked: NodeSet,
    others_since: u64,
    others_check_at: Option<u64>,
    /// Until then (a gap after a link came back), repair runs with short
    /// random delays: a healed partition is repaired at once, and the few
    /// duplicate requests or answers that shorter delays may cause are
    /// cheap next to waiting.
    fast_until: u64,
    ticks_at: Option<u64>,
    /// The ticks sent at `ticks_at` ask every hearer to answer with theirs
    /// (a link came back: see [`Info::reply`]).
    ticks_reply: bool,
    missing_at: Option<u64>,
    resend_at: Option<u64>,
    gap_at: Option<u64>,
    round_at: u64,
    started_at: u64,
    /// Last ping value and client address of every node heard.
    peers: BTreeMap<NodeName, (PingValue, Option<String>)>,
    /// Client addresses two nodes advertise alike, warned about once each:
    /// (address, node, node).
    addr_clashes: std::collections::BTreeSet<(String, NodeName, NodeName)>,
    fetching: bool,
    /// After a failed fetch, no new one before this time.
    fetch_after: u64,
    purge: Purge,
    /// When each node was last heard from, on any topic.
    heard: BTreeMap<NodeName, u64>,
    /// Reported ticks of other live nodes, left to their origin to answer
    /// once; asked for again, we answer them too.
    deferred: NodeSet,
    /// Of those, the ones asked for again.
    second: NodeSet,
    /// When an answer to one of our requests last arrived.
    repair_rx: u64,
    /// Background rounds so far.
    rounds: u64,
    /// Nodes another node dropped that still head entries here, and how
    /// many more rounds to try.
    drops: BTreeMap<NodeName, u32>,
    /// Nodes dropped here, and for how many more heartbeats to say so (a
    /// single message may be lost).
    dropped: BTreeMap<NodeName, u32>,
}

/// The delete actor and what it decided.
struct Purge {
    actor: Actor,
    /// The deleter group, from `(None, "actor", "del")`; empty = no purging.
    deleters: Vec<NodeName>,
    /// Tock of the group entry last read.
    seen_tock: u64,
    /// Tocks at which this node was the delete housekeeper with the whole
    /// group present (the last four).
    tags: std::collections::VecDeque<u64>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("me", &self.me)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// The protocol for the node whose state is `st`; `seed` drives every
    /// random delay. Events already in the log are not broadcast.
    pub fn new(st: &State, cfg: ClusterConfig, seed: u64, addr: Option<String>) -> Core {
        let me = st.me().clone();
        let mut del = Actor::new(me.clone(), cfg.delete.clone());
        del.set_enabled(false);
        Core {
            actor: Actor::new(me.clone(), cfg.ping.clone()),
            topics: Topics::new(&cfg.root),
            me,
            cfg,
            rng: StdRng::seed_from_u64(seed),
            next_seq: st.log().next_seq(),
            unwritten: Seq::MAX,
            skipped: (RangeSet::new(), 0),
            out: Vec::new(),
            notices: Vec::new(),
            addr,
            asked: NodeSet::default(),
            ticks_at: None,
            ticks_reply: false,
            others_asked: NodeSet::default(),
            others_since: 0,
            others_check_at: None,
            fast_until: 0,
            missing_at: None,
            resend_at: None,
            gap_at: None,
            round_at: 0,
            started_at: 0,
            peers: BTreeMap::new(),
            addr_clashes: Default::default(),
            fetching: false,
            fetch_after: 0,
            purge: Purge {
                actor: del,
                deleters: Vec::new(),
                seen_tock: 0,
                tags: Default::default(),
            },
            heard: BTreeMap::new(),
            deferred: NodeSet::default(),
            second: NodeSet::default(),
            repair_rx: 0,
            rounds: 0,
            drops: BTreeMap::new(),
            dropped: BTreeMap::new(),
        }
    }

    /// The topics this node publishes and listens on.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// The filter to subscribe to for everything [`Core::receive`] takes.
    pub fn filter(&self) -> String {
        format!("{}/#", self.cfg.root)
    }

    /// What an operator wants to see: housekeeper, election history, the
    /// peers heard (tick, client address, seconds since last heard) and
    /// the deleter group.
    pub fn view(&self, now: u64) -> Value {
        let names = |v: &[NodeName]| Value::Array(v.iter().cloned().map(Value::Str).collect());
        let peers = self
            .heard
            .iter()
            .map(|(n, &t)| {
                let (value, addr) = self.peers.get(n).cloned().unwrap_or((None, None));
                let mut m = vec![(
                    Value::str("heard"),
                    Value::Float(now.saturating_sub(t) as f64 / 1000.0),
                )];
                if let Some((_, tick)) = value {
                    m.push((Value::str("tick"), Value::uint(tick)));
                }
                if let Some(a) = addr {
                    m.push((Value::str("addr"), Value::str(&a)));
                }
                (Value::Str(n.clone()), Value::Map(m))
            })
            .collect();
        Value::map([
            ("housekeeper", Value::Bool(self.actor.is_tagged())),
            ("history", names(self.actor.history())),
            ("peers", Value::Map(peers)),
            ("deleters", names(&self.purge.deleters)),
        ])
    }

    /// Limits broadcasting to the event-log records below `next`: a node
    /// with a data directory broadcasts a change only once it is written to
    /// its log, so a crash of the process never loses a change that others
    /// hold (the ticks above its last logged change can then be declared
    /// never used, see [`State::skip_own_ticks`]). Without a call, every
    /// record is broadcast at once.
    pub fn allow_broadcast_below(&mut self, next: Seq) {
        self.unwritten = next;
    }

    /// Starts the protocol: announces this node and asks everyone for
    /// their ticks.
    pub fn start(&mut self, st: &mut State, now: u64) {
        self.started_at = now;
        let skipped = st.take_skipped();
        if !skipped.is_empty() {
            // Told with every tick exchange and the next heartbeats: one
            // message may be lost, and links may not be up yet.
            self.skipped = (skipped, SKIP_BEATS);
        }
        self.round_at = now + self.cfg.ping.cycle;
        self.actor.set_value(ping_value(st));
        let msgs = self.actor.start(now, &mut self.rng);
        self.publish_actor(msgs);
        self.refresh_deleters(st);
        let msgs = self.purge.actor.start(now, &mut self.rng);
        self.publish_del(msgs);
        if !st.node(&self.me).is_none_or(|n| n.missing().is_empty()) {
            self.gap_at = Some(now + self.cfg.own_gap_grace);
        }
        self.ticks_at = Some(now);
    }

    /// A link to another node came (back) up: exchange ticks at once.
    ///
    /// Our ticks alone are not enough: a link is one direction (our client
    /// on a peer's broker), and the peer's link to our broker may come back
    /// only later, so it may never hear what we send now. So our ticks ask
    /// every hearer to answer with theirs ([`Info::reply`]); of two nodes,
    /// the one whose link comes back last asks, and the other's link is up
    /// by then. Both learn what they miss and ask for it, without waiting
    /// for the next housekeeper's round.
    pub fn link_up(&mut self, now: u64) {
        // What we asked for while the link was down may never have been
        // heard, or its answer lost: ask again once the ticks are in.
        self.forget_asked(now);
        self.fast_until = now + self.cfg.ping.gap;
        self.ticks_reply = true;
        self.ticks_soon(now, self.cfg.ping.gap / 10);
    }

    /// Counts nothing as asked any more — unless answers are streaming in:
    /// under a big repair, brokers may drop a slow link, and asking for
    /// everything again on its return would only send it all twice.
    fn forget_asked(&mut self, now: u64) {
        if now >= self.repair_rx + self.cfg.ping.gap {
            self.asked = NodeSet::default();
        }
    }

    /// Schedules sending our ticks within `max_delay` ms (random, so that
    /// many nodes reacting to one event do not all send at once).
    fn ticks_soon(&mut self, now: u64, max_delay: u64) {
        let at = now + self.jitter(max_delay);
        self.ticks_at = Some(self.ticks_at.map_or(at, |t| t.min(at)));
    }

    /// The fetch of a joining node's state ended (`ok`: it is ready now).
    pub fn fetch_done(&mut self, ok: bool, now: u64) {
        self.fetching = false;
        if !ok {
            self.fetch_after = now + self.cfg.ping.gap;
        }
        if ok {
            self.ticks_at = Some(now);
            // Own ticks nobody had (a node that lost its files) are
            // settled like a crash gap.
            self.gap_at = Some(now + self.cfg.own_gap_grace);
        }
    }

    /// Takes a message off the bus.
    pub fn receive(&mut self, st: &mut State, now: u64, topic: &str, payload: &[u8]) {
        if topic == self.topics.update && peek_sender(payload) == Some(&*self.me) {
            return; // our own batch coming back
        }
        let result = if topic == self.topics.update {
            Update::decode(payload).map(|u| self.on_update(st, now, u))
        } else if topic == self.topics.info {
            Info::decode(payload).map(|i| self.on_info(st, now, i))
        } else if topic == self.topics.ping {
            self.on_ping(st, now, payload);
            Ok(())
        } else if topic == self.topics.del {
            self.on_del(st, now, payload);
            Ok(())
        } else {
            Ok(()) // anything else under the root is not ours
        };
        if let Err(e) = result {
            tracing::warn!(%topic, error = %e, "ignoring a bad cluster message");
        }
    }

    fn on_update(&mut self, st: &mut State, now: u64, u: Update) {
        if u.node == self.me {
            return;
        }
        self.heard.insert(u.node.clone(), now);
        let mut forged = None;
        for ev in u.events {
            if let Err(why) = st.vet(&ev.chain, Reporter::Peer(&u.node)) {
                forged.get_or_insert((why, 0)).1 += 1;
                continue;
            }
            let answer = ev.chain.links().iter().any(|l| {
                self.asked
                    .0
                    .get(&l.node)
                    .is_some_and(|r| r.contains(l.tick))
            });
            if answer {
                self.repair_rx = now;
            }
            let chain = ev.chain.clone();
            st.apply(ev);
            st.sighted(&chain);
        }
        if let Some((why, n)) = forged {
            tracing::warn!(node = %u.node, events = n, %why, "ignoring impossible events");
        }
        // A jump in someone's ticks means a message was lost.
        self.check_missing(st, now);
    }

    fn on_info(&mut self, st: &mut State, now: u64, i: Info) {
        if i.node == self.me {
            return;
        }
        if self.heard.insert(i.node.clone(), now).is_none() {
            // A node we did not know: tell it our ticks (and where we
            // serve) soon, so a joining node need not wait for a cycle.
            self.ticks_soon(now, self.cfg.ping.gap / 4);
        }
        if i.reply {
            // Its link to us came back: it wants our ticks now, and what
            // anyone asked for before may not have reached it.
            tracing::debug!(node = %self.me, from = %i.node, "a link came back: answering with our ticks");
            self.forget_asked(now);
            self.fast_until = now + self.cfg.ping.gap;
            self.ticks_soon(now, self.cfg.ping.gap / 10);
        }
        if let Some(addr) = &i.addr {
            self.check_addr(&i.node, addr);
            let e = self.peers.entry(i.node.clone()).or_insert((None, None));
            e.1 = Some(addr.clone());
            if e.0.is_none() {
                e.0 = i.tick.map(|t| (0, t));
            }
            if i.tick.is_some() {
                self.maybe_fetch(st, now, i.node.clone());
            }
        }
        if let Some(t) = i.tick {
            st.saw_node_tick(&i.node, t);
        }
        for (n, t) in &i.ticks {
            if st.believable_tick(n, *t, &i.node) {
                st.saw_node_tick(n, *t);
            } else {
                tracing::warn!(node = %i.node, about = %n, tick = t, "ignoring an impossible tick");
            }
        }
        let i = Info {
            known: believable(st, i.known, &i.node),
            deleted: believable(st, i.deleted, &i.node),
            ..i
        };
        if !i.missing.is_empty() {
            st.report_missing(&i.missing);
            if self.others_check_at.is_none() {
                self.others_since = now;
                self.others_check_at = Some(now + self.cfg.ping.gap);
            }
            for (n, r) in &i.missing.0 {
                self.asked.0.entry(n.clone()).or_default().union_with(r);
                self.others_asked
                    .0
                    .entry(n.clone())
                    .or_default()
                    .union_with(r);
                if *n != self.me && self.alive(n, now) {
                    let d = self.deferred.0.entry(n.clone()).or_default();
                    let again = d.intersection(r);
                    d.union_with(r);
                    self.second
                        .0
                        .entry(n.clone())
                        .or_default()
                        .union_with(&again);
                }
            }
            let at = if now < self.fast_until {
                now + self.jitter(self.cfg.ping.gap / 10)
            } else {
                now + self.cfg.ping.gap / 10 + self.jitter(self.cfg.ping.gap / 3)
            };
            self.resend_at.get_or_insert(at);
        }
        if !i.known.is_empty() {
            st.learn_known(&i.known);
        }
        if !i.skipped.is_empty() {
            self.on_skipped(st, now, &i);
        }
        if !i.deleted.is_empty() {
            st.learn_deleted(&i.deleted);
        }
        for n in &i.node_drop {
            if let Err(why) = st.forget_node(n) {
                // The change that made it head nothing may still be on its
                // way: try again in the next rounds.
                tracing::debug!(node = %n, why, "not dropping node yet");
                self.drops.insert(n.clone(), 3);
            }
        }
        self.check_missing(st, now);
    }

    /// The sender declared some of its own ticks never used. Those are
    /// superseded here too. Any of them held here were broadcast and then
    /// lost by the sender's files (an operating-system crash under a lazy
    /// fsync): send them back.
    fn on_skipped(&mut self, st: &mut State, now: u64, i: &Info) {
        let beyond = i.skipped.ranges().last().map(|(_, b)| b - 1) > i.tick;
        if beyond {
            tracing::warn!(node = %i.node, "ignoring skipped ticks beyond the sender's own tick");
            return;
        }
        let mut ticks = NodeSet::default();
        ticks.0.insert(i.node.clone(), i.skipped.clone());
        let held = st.present_within(&i.node, &i.skipped);
        st.learn_known(&ticks);
        if held.is_empty() {
            return;
        }
        tracing::warn!(
            node = %i.node,
            ticks = %held,
            "a node declared ticks never used that are held here: sending them back"
        );
        let mut back = NodeSet::default();
        back.0.insert(i.node.clone(), held.clone());
        st.report_missing(&back);
        // Answered by us although their origin is alive: it lacks them.
        self.second
            .0
            .entry(i.node.clone())
            .or_default()
            .union_with(&held);
        let at = now + self.jitter(self.cfg.ping.gap / 10);
        self.resend_at = Some(self.resend_at.map_or(at, |t| t.min(at)));
    }

    fn on_ping(&mut self, st: &mut State, now: u64, payload: &[u8]) {
        let Ok(v) = codec::decode_with(payload, BUS_LIMITS) else {
            tracing::warn!("ignoring an undecodable ping");
            return;
        };
        let Some(msg) = ActorMsg::from_value(&v) else {
            tracing::warn!("ignoring a malformed ping");
            return;
        };
        if let ActorMsg::Ping { node, value, .. } = &msg {
            if *node != self.me {
                self.heard.insert(node.clone(), now);
            }
            let addr = v.get("addr").and_then(Value::as_str).map(str::to_string);
            if let (Some(a), false) = (&addr, *node == self.me) {
                self.check_addr(node, a);
            }
            self.peers.insert(node.clone(), (*value, addr));
            if let (Some((tock, tick)), false) = (value, *node == self.me) {
                if *tick > MAX_COUNTER || *tock > MAX_COUNTER {
                    tracing::warn!(%node, "ignoring a ping with an impossible tick or tock");
                    return;
                }
                st.tock().seen(*tock);
                st.saw_node_tick(node, *tick);
            }
        }
        self.actor.set_value(ping_value(st));
        let (msgs, events) = self.actor.handle(now, &msg, &mut self.rng);
        self.publish_actor(msgs);
        self.actor_events(st, now, events);
        self.check_missing(st, now);
    }

    fn actor_events(&mut self, st: &mut State, now: u64, events: Vec<ActorEvent>) {
        for e in events {
            match e {
                ActorEvent::Tag => {
                    tracing::debug!(node = %self.me, "housekeeper: broadcasting ticks");
                    self.ticks_at = Some(now);
                }
                ActorEvent::Recover {
                    prio,
                    local,
                    remote,
                } => {
                    tracing::info!(prio, ?local, ?remote, "healed split: exchanging ticks");
                    let at = now + self.cfg.ping.gap * prio as u64 / 8 + self.jitter(50);
                    self.ticks_at = Some(self.ticks_at.map_or(at, |t| t.min(at)));
                }
                ActorEvent::GoodNode { node } => self.maybe_fetch(st, now, node),
                ActorEvent::NameCollision => self.notices.push(Notice::NameCollision),
                ActorEvent::Ping { .. } | ActorEvent::Untag | ActorEvent::Detag => {}
            }
        }
    }

    /// Warns (once) when `node` advertises the client address of another
    /// node or of this one: a joining node could fetch from the wrong one,
    /// or from none (nodes sharing a host name without `--advertise`).
    fn check_addr(&mut self, node: &NodeName, addr: &str) {
        let mine = self.addr.as_deref() == Some(addr);
        let other = if mine {
            Some(self.me.clone())
        } else {
            self.peers
                .iter()
                .find(|(n, (_, a))| *n != node && a.as_deref() == Some(addr))
                .map(|(n, _)| n.clone())
        };
        let Some(other) = other else { return };
        let (a, b) = if other < *node {
            (other, node.clone())
        } else {
            (node.clone(), other)
        };
        if self
            .addr_clashes
            .insert((addr.to_string(), a.clone(), b.clone()))
        {
            tracing::warn!(
                node = %self.me,
                nodes = %format!("{a}, {b}"),
                %addr,
                "two nodes advertise the same client address: give each its own --advertise"
            );
        }
    }

    fn maybe_fetch(&mut self, st: &State, now: u64, node: NodeName) {
        if st.tick().is_some() || self.fetching || now < self.fetch_after {
            return;
        }
        let addr = self.peers.get(&node).and_then(|(_, a)| a.clone());
        self.fetching = true;
        self.notices.push(Notice::Fetch { node, addr });
    }

    /// Schedules a request for missing ticks if there are new ones.
    fn check_missing(&mut self, st: &State, now: u64) {
        if self.missing_at.is_some() {
            return;
        }
        if !self.unasked_missing(st).is_empty() {
            let max = if now < self.fast_until {
                self.cfg.ping.gap / 10
            } else {
                self.cfg.ping.gap / 2
            };
            self.missing_at = Some(now + self.jitter(max));
        }
    }

    /// Ticks missing here that nobody asked for this round.
    fn unasked_missing(&self, st: &State) -> NodeSet {
        let mut m = st.missing();
        for (n, r) in &self.asked.0 {
            if let Some(x) = m.0.get_mut(n) {
                x.subtract(r);
            }
        }
        m.0.retain(|_, r| !r.is_empty());
        m
    }

    /// Runs due timers and broadcasts new local changes.
    pub fn poll(&mut self, st: &mut State, now: u64) {
        self.broadcast_log(st);
        self.actor.set_value(ping_value(st));
        if now >= self.actor.next_deadline() {
            let (msgs, events) = self.actor.poll(now, &mut self.rng);
            self.publish_actor(msgs);
            self.actor_events(st, now, events);
        }
        self.refresh_deleters(st);
        if now >= self.purge.actor.next_deadline() {
            let (msgs, events) = self.purge.actor.poll(now, &mut self.rng);
            self.publish_del(msgs);
            self.del_events(st, now, events);
        }
        if now >= self.round_at {
            // The background repair: ask again for what is still missing
            // (answers may have been lost) — unless answers are still
            // streaming in.
            self.round_at = now + self.cfg.ping.cycle;
            if now >= self.repair_rx + self.cfg.ping.gap {
                self.asked = NodeSet::default();
            }
            self.rounds += 1;
            self.drops.retain(|n, tries| {
                *tries -= 1;
                st.forget_node(n).is_err() && *tries > 0
            });
            if self.rounds % 3 == 0 {
                self.deferred = NodeSet::default();
                self.second = NodeSet::default();
            }
            // A heartbeat with our tick: whoever missed our last change
            // notices within a cycle, and the deleter group sees who is up.
            let mut beat = Info::new(self.me.clone(), st.tick());
            if self.skipped.1 > 0 {
                self.skipped.1 -= 1;
                beat.skipped = self.skipped.0.clone();
            }
            for n in st.take_dropped() {
                self.dropped.insert(n, 5);
            }
            self.dropped.retain(|n, left| {
                beat.node_drop.push(n.clone());
                *left -= 1;
                *left > 0
            });
            self.publish_info(beat);
            self.check_missing(st, now);
            if st.tick().is_none() {
                self.maybe_bootstrap(now);
            }
        }
        if self.ticks_at.is_some_and(|t| now >= t) {
            self.ticks_at = None;
            let mut i = Info::new(self.me.clone(), st.tick());
            i.ticks = st.ticks();
            i.reply = std::mem::take(&mut self.ticks_reply);
            if self.skipped.1 > 0 {
                i.skipped = self.skipped.0.clone();
            }
            self.publish_info(i);
        }
        if self.others_check_at.is_some_and(|t| now >= t) {
            self.others_check_at = None;
            self.recheck_others_asked(st, now);
        }
        if self.missing_at.is_some_and(|t| now >= t) {
            self.missing_at = None;
            self.send_missing(st);
        }
        if self.resend_at.is_some_and(|t| now >= t) {
            self.resend_at = None;
            self.resend(st, now);
        }
        if self.gap_at.is_some_and(|t| now >= t) {
            self.gap_at = None;
            let gap = st.settle_own_gap();
            if !gap.is_empty() {
                tracing::info!(ticks = %gap, "own ticks nobody holds: declared unused");
            }
        }
    }

    /// A gap after other nodes asked for ticks we miss too: unless answers
    /// are coming in, those requests count as asked no more, so that what
    /// is still missing is asked for again, by us.
    fn recheck_others_asked(&mut self, st: &State, now: u64) {
        let others = std::mem::take(&mut self.others_asked);
        if self.repair_rx >= self.others_since {
            // Answers are streaming in: look again later.
            self.others_asked = others;
            self.others_since = now;
            self.others_check_at = Some(now + self.cfg.ping.gap);
            return;
        }
        for (n, r) in &others.0 {
            if let Some(a) = self.asked.0.get_mut(n) {
                a.subtract(r);
            }
        }
        self.check_missing(st, now);
    }

    fn maybe_bootstrap(&mut self, now: u64) {
        if self.fetching || now < self.started_at + self.cfg.join_wait {
            return;
        }
        // Only a cluster whose nodes are all here and empty is new: a node
        // that hears nobody waits (its peers may be out of reach).
        let heard_others = self.peers.keys().any(|n| *n != self.me);
        let any_ready = self.peers.values().any(|(v, _)| v.is_some());
        let first = self.peers.keys().all(|n| *n >= self.me);
        if heard_others && !any_ready && first {
            self.notices.push(Notice::Bootstrap);
            self.ticks_at = Some(now); // tell the others at once
        } else if !heard_others {
            tracing::warn!(
                node = %self.me,
                "no other node heard yet: not serving (use --force to serve without the cluster's data)"
            );
        }
    }

    fn send_missing(&mut self, st: &State) {
        let m = self.unasked_missing(st);
        if m.is_empty() {
            return;
        }
        tracing::info!(node = %self.me, missing = %fmt_set(&m), "repair: asking for missing ticks");
        for (n, r) in &m.0 {
            self.asked.0.entry(n.clone()).or_default().union_with(r);
        }
        let mut i = Info::new(self.me.clone(), st.tick());
        i.missing = m;
        self.publish_info(i);
    }

    /// Whether `node` was heard from within the last two cycles.
    /// The nodes heard within the last two cycles (this one included).
    pub fn live_nodes(&self, now: u64) -> Vec<NodeName> {
        let mut live: Vec<NodeName> = self
            .heard
            .keys()
            .filter(|n| self.alive(n, now))
            .cloned()
            .collect();
        live.push(self.me.clone());
        live
    }

    fn alive(&self, node: &NodeName, now: u64) -> bool {
        let window = 2 * self.cfg.ping.cycle;
        self.heard.get(node).is_some_and(|&t| t + window >= now)
    }

    /// Answers reported ticks: our own, those of nodes we do not hear
    /// (maybe gone), and those asked for again. The ticks of other live
    /// nodes are left to them first: one answer per tick, not one per
    /// holder.
    fn resend(&mut self, st: &mut State, now: u64) {
        let live: std::collections::BTreeSet<NodeName> = self
            .heard
            .keys()
            .filter(|n| self.alive(n, now))
            .cloned()
            .collect();
        let (me, second) = (&self.me, &self.second);
        let a = st.answers(self.cfg.resend_max, |n, t| {
            n == me || !live.contains(n) || second.0.get(n).is_some_and(|r| r.contains(t))
        });
        if !a.entries.is_empty() || !a.known.is_empty() || !a.deleted.is_empty() {
            tracing::info!(
                node = %self.me,
                entries = a.entries.len(),
                known = %fmt_set(&a.known),
                deleted = %fmt_set(&a.deleted),
                "repair: answering missing ticks"
            );
        }
        for chunk in a.entries.chunks(self.cfg.batch.max(1)) {
            self.publish_events(chunk.iter());
        }
        if !a.known.is_empty() || !a.deleted.is_empty() {
            let mut i = Info::new(self.me.clone(), st.tick());
            i.known = a.known;
            i.deleted = a.deleted;
            self.publish_info(i);
        }
        if st.has_reported() && a.entries.len() >= self.cfg.resend_max {
            self.resend_at = Some(now);
        }
    }

    /// Broadcasts the events this node originated since the last call.
    fn broadcast_log(&mut self, st: &State) {
        loop {
            let room = self.unwritten.saturating_sub(self.next_seq);
            if room == 0 {
                return;
            }
            let max = self
                .cfg
                .batch
                .min(usize::try_from(room).unwrap_or(usize::MAX));
            let batch: Vec<&UpdateEvent> = match st.log().read(self.next_seq, max) {
                Ok(it) => {
                    let mut n = 0;
                    let b = it
                        .inspect(|_| n += 1)
                        .filter(|(_, e)| e.chain.head().node == self.me)
                        .map(|(_, e)| &**e)
                        .collect();
                    self.next_seq += n;
                    if n == 0 {
                        return;
                    }
                    b
                }
                Err(lag) => {
                    // Others will learn our tick from pings and ask.
                    tracing::warn!(node = %self.me, %lag, "broadcast fell behind the event log");
                    self.next_seq = lag.oldest;
                    self.ticks_at = Some(0);
                    continue;
                }
            };
            if !batch.is_empty() {
                self.publish_events(batch);
            }
        }
    }

    fn publish_events<'a>(&mut self, events: impl IntoIterator<Item = &'a UpdateEvent>) {
        for m in encode_updates(&self.me, events) {
            self.out.push((self.topics.update.clone(), m));
        }
    }

    /// Publishes `i`, telling where this node serves clients.
    fn publish_info(&mut self, mut i: Info) {
        i.addr.clone_from(&self.addr);
        self.out.push((self.topics.info.clone(), i.encode()));
    }

    fn publish_actor(&mut self, msgs: Vec<ActorMsg>) {
        for m in msgs {
            let mut v = m.to_value();
            if let (ActorMsg::Ping { .. }, Some(addr), Value::Map(pairs)) = (&m, &self.addr, &mut v)
            {
                pairs.push((Value::str("addr"), Value::str(addr)));
            }
            self.out
                .push((self.topics.ping.clone(), codec::to_vec(&v).into()));
        }
    }

    fn publish_del(&mut self, msgs: Vec<ActorMsg>) {
        for m in msgs {
            let v = m.to_value();
            self.out
                .push((self.topics.del.clone(), codec::to_vec(&v).into()));
        }
    }

    fn on_del(&mut self, st: &mut State, now: u64, payload: &[u8]) {
        let msg = codec::decode_with(payload, BUS_LIMITS)
            .ok()
            .and_then(|v| ActorMsg::from_value(&v));
        let Some(msg) = msg else {
            tracing::warn!("ignoring a malformed delete-actor message");
            return;
        };
        if let Some(n) = msg.sender().filter(|n| *n != &*self.me) {
            self.heard.insert(NodeName::from(n), now);
        }
        let (msgs, events) = self.purge.actor.handle(now, &msg, &mut self.rng);
        self.publish_del(msgs);
        self.del_events(st, now, events);
    }

    /// Reads the deleter group from `(None, "actor", "del")` when it
    /// changed: members take part in the delete actor, others only listen.
    fn refresh_deleters(&mut self, st: &State) {
        let path = [
            Value::Nil,
            Value::str(DELETER_GROUP[0]),
            Value::str(DELETER_GROUP[1]),
        ];
        let Some(e) = st.entry(&path) else { return };
        if e.tock() == self.purge.seen_tock {
            return;
        }
        self.purge.seen_tock = e.tock();
        let nodes: Vec<NodeName> = deleter_names(e.data()).map(NodeName::from).collect();
        let member = nodes.contains(&self.me);
        tracing::info!(node = %self.me, deleters = ?nodes, member, "deleter group");
        let mut cfg = self.purge.actor.config().clone();
        if cfg.nodes < nodes.len() {
            cfg.nodes = nodes.len();
            self.purge.actor.set_config(cfg);
        }
        self.purge.deleters = nodes;
        self.purge.tags.clear();
        self.purge.actor.set_enabled(member);
        self.purge.actor.set_value(member.then_some((0, 0)));
    }

    /// Whether every member of the deleter group was heard from within the
    /// last two delete cycles: only then may tombstones go, as every member
    /// has had the time to see the deletions.
    fn group_present(&self, now: u64) -> bool {
        let window = 2 * self.purge.actor.config().cycle;
        !self.purge.deleters.is_empty()
            && self
                .purge
                .deleters
                .iter()
                .all(|n| *n == self.me || self.heard.get(n).is_some_and(|&t| t + window >= now))
    }

    fn del_events(&mut self, st: &mut State, now: u64, events: Vec<ActorEvent>) {
        for e in events {
            match e {
                ActorEvent::Tag if self.group_present(now) => {
                    let tags = &mut self.purge.tags;
                    tags.push_back(st.tock().next());
                    if tags.len() > 4 {
                        tags.pop_front();
                    }
                    if let (Some(&old), Some(&new)) = (tags.front(), tags.back()) {
                        self.purge.actor.set_value(Some((old, new)));
                        if tags.len() > 2 {
                            self.purge_before(st, old);
                        }
                    }
                }
                ActorEvent::Ping {
                    node,
                    value: Some((old, _)),
                } if node != self.me
                    && old > 0
                    && self.purge.deleters.contains(&node)
                    && self.group_present(now) =>
                {
                    self.purge_before(st, old);
                }
                _ => {}
            }
        }
    }

    fn purge_before(&mut self, st: &mut State, tock: u64) {
        let n = st.purge_deleted(tock);
        if n > 0 {
            tracing::info!(node = %self.me, tock, purged = n, "purged deletion tombstones");
        }
    }

    /// When [`Core::poll`] wants to run next.
    pub fn next_deadline(&self) -> u64 {
        [
            self.ticks_at,
            self.missing_at,
            self.resend_at,
            self.gap_at,
            self.others_check_at,
        ]
        .into_iter()
        .flatten()
        .chain([
            self.actor.next_deadline(),
            self.purge.actor.next_deadline(),
            self.round_at,
        ])
        .min()
        .unwrap_or(u64::MAX)
    }

    /// Messages to publish, in order: `(topic, payload)`.
    pub fn take_outgoing(&mut self) -> Vec<(String, Bytes)> {
        std::mem::take(&mut self.out)
    }

    /// Things the caller must do.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    fn jitter(&mut self, max: u64) -> u64 {
        if max == 0 {
            0
        } else {
            self.rng.gen_range(0..=max)
        }
    }
}

/// A node set for logs: `n1:[1,4) n2:7`.
/// `set` without the nodes whose ticks `sender` cannot know
/// ([`State::believable_tick`]).
fn believable(st: &State, mut set: NodeSet, sender: &str) -> NodeSet {
    set.0.retain(|n, r| {
        let top = r.ranges().last().map_or(0, |(_, b)| b - 1);
        let ok = st.believable_tick(n, top, sender);
        if !ok {
            tracing::warn!(node = %sender, about = %n, tick = top, "ignoring impossible ticks");
        }
        ok
    });
    set
}

fn fmt_set(s: &NodeSet) -> String {
    let mut out = String::new();
    for (n, r) in &s.0 {
        if r.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(n);
        out.push(':');
        for (i, (a, b)) in r.ranges().enumerate() {
            if i > 0 {
                out.push(',');
            }
            if b == a + 1 {
                out.push_str(&a.to_string());
            } else {
                out.push_str(&format!("[{a},{b})"));
            }
        }
    }
    out
}

/// A node's ping value: `(tock, tick)` once it is ready.
fn ping_value(st: &State) -> PingValue {
    st.tick().map(|t| (st.tock().peek(), t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{NodeInfo, MAX_TICK_LEAP};
    use distkv_log::LogLimits;
    use distkv_model::Chain;
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
            st.local_change(&[Value::uint(i)], Some(Value::uint(i)))
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
                (*a.local_change(&[Value::uint(i)], Some(Value::uint(i)))
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
            let skipped = crate::persist::durable::resume_above_reservation(&mut a, 10);
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
        let back_here = a.entry(&[Value::uint(3)]).and_then(|e| e.data().cloned());
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
            .local_change(&[Value::str("a")], Some(Value::uint(1)))
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
            .local_change(&[Value::str("c")], Some(Value::uint(2)))
            .expect("writes go on");
        assert_eq!(e.chain.head().tick, 2);
    }
}
