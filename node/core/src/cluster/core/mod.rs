//! The replication protocol as a pure state machine.
//!
//! [`Core`] owns no state and does no I/O: the caller passes the node's
//! [`State`], the current time (ms, any monotonic origin) and the messages
//! it took off the bus; `Core` applies what arrived, and queues what to
//! publish ([`Core::take_outgoing`]) and what the caller must do
//! ([`Notice`]). The async node (`distkv_node::cluster::node`) and the
//! seeded simulation drive the very same code.
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
//!
//! The code follows these roles: `broadcast` (replication, and what is
//! published), `repair` (missing → resend → known), `join` (state transfer
//! for a node without data, starting a cluster, links coming back),
//! `membership` (the election and who is alive) and `purge` (the delete
//! actor). This module holds the struct, its timers and the dispatch.

use std::collections::BTreeMap;

use bytes::Bytes;
use distkv_log::{LogCopy, Seq};
use distkv_model::chain::MAX_COUNTER;
use distkv_model::codec;
use distkv_model::fast::EventDecoder;
use distkv_model::{NodeName, NodeSet, RangeSet, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::actor::{Actor, ActorConfig, ActorEvent, ActorMsg, PingValue};
use super::msg::{peek_sender, Info, MsgError, Topics, Update, UpdateEncoder, BUS_LIMITS};
use crate::admit::{Admit, Open};
use crate::state::{Lookahead, Reporter, State};
use membership::ping_value;

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

/// A bus message read before the state is taken ([`Core::read`]).
#[derive(Debug)]
pub enum Incoming<'a> {
    /// Another node's batch of changes.
    Update(Update),
    /// A node's tick bookkeeping.
    Info(Info),
    /// One of our own `update` messages coming back from the bus.
    Own,
    /// An `update` or `info` message that does not decode.
    Bad {
        /// Where it came from.
        topic: &'a str,
        /// Why it does not decode.
        error: MsgError,
    },
    /// Any other message, as it came.
    Other {
        /// Where it came from.
        topic: &'a str,
        /// Its bytes.
        payload: &'a [u8],
    },
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
    /// The records taken for broadcasting, not sent yet, and when.
    unsent: LogCopy,
    unsent_at: u64,
    /// Serializes the `update` messages, its buffer kept between them.
    updates: UpdateEncoder,
    /// Reads the `update` messages, its node names kept between them.
    decoder: EventDecoder,
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
    /// Why other nodes' events are not taken now (the history cannot be
    /// written, or too much waits for the disk), and how many were left.
    refusing: Option<(String, u64)>,
    /// What decides whether other nodes' events may be applied.
    admit: std::sync::Arc<dyn Admit + Send + Sync>,
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
            unsent: LogCopy::default(),
            unsent_at: 0,
            updates: UpdateEncoder::default(),
            decoder: EventDecoder::new(),
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
            refusing: None,
            admit: std::sync::Arc::new(Open),
            rounds: 0,
            drops: BTreeMap::new(),
            dropped: BTreeMap::new(),
        }
    }

    /// The same, with other nodes' events passing `admit` (the node's
    /// commit path) before they are applied; without it, every event that
    /// passes the state's own checks is.
    pub fn with_admission(mut self, admit: std::sync::Arc<dyn Admit + Send + Sync>) -> Core {
        self.admit = admit;
        self
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

    /// Stops (`Some(why)`) or resumes (`None`) taking other nodes' events
    /// — those broadcast, and the answers to repair requests. Events left
    /// are not lost: their ticks count as missing here, so they are asked
    /// for again once events are taken again. Asked of [`Admit::batch`]
    /// before each message.
    fn refuse_events(&mut self, why: Option<String>) {
        match (why, &mut self.refusing) {
            (Some(why), None) => {
                tracing::warn!(%why, "not taking other nodes' events for now; they are asked for again later");
                self.refusing = Some((why, 0));
            }
            (Some(why), Some(r)) => r.0 = why,
            (None, Some((_, n))) => {
                tracing::info!(left = *n, "taking other nodes' events again");
                self.refusing = None;
            }
            (None, None) => {}
        }
    }

    /// Takes a message off the bus: [`Core::read`], then [`Core::take`].
    pub fn receive(&mut self, st: &mut State, now: u64, topic: &str, payload: &[u8]) {
        let m = self.read(topic, payload);
        self.take(st, now, m);
    }

    /// Reads a bus message without the state: an `update` or `info`
    /// message is decoded here (a full batch of events takes milliseconds
    /// to decode, which a driver does before it takes the state, not while
    /// every client waits for it), our own batches are recognised, any
    /// other message is passed on as it came.
    pub fn read<'a>(&mut self, topic: &'a str, payload: &'a [u8]) -> Incoming<'a> {
        let decoded = if topic == self.topics.update {
            if peek_sender(payload) == Some(&*self.me) {
                return Incoming::Own;
            }
            Update::decode_with(payload, &mut self.decoder).map(Incoming::Update)
        } else if topic == self.topics.info {
            Info::decode(payload).map(Incoming::Info)
        } else {
            return Incoming::Other { topic, payload };
        };
        decoded.unwrap_or_else(|error| Incoming::Bad { topic, error })
    }

    /// Handles a message [`Core::read`] read.
    pub fn take(&mut self, st: &mut State, now: u64, m: Incoming<'_>) {
        let taking = self.admit.batch(st);
        self.refuse_events(taking.err().map(|e| e.to_string()));
        match m {
            Incoming::Own => {} // our own batch coming back
            Incoming::Update(u) => self.on_update(st, now, u),
            Incoming::Info(i) => self.on_info(st, now, i),
            Incoming::Bad { topic, error } => {
                tracing::warn!(%topic, %error, "ignoring a bad cluster message");
            }
            Incoming::Other { topic, payload } => {
                if topic == self.topics.ping {
                    self.on_ping(st, now, payload);
                } else if topic == self.topics.del {
                    self.on_del(st, now, payload);
                } // anything else under the root is not ours
            }
        }
    }

    /// Runs due timers and takes new local changes for broadcasting (they
    /// go out with [`Core::take_outgoing`]).
    pub fn poll(&mut self, st: &mut State, now: u64) {
        self.broadcast_log(st, now);
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

    /// Messages to publish, in order: `(topic, payload)`. The changes
    /// taken for broadcasting are encoded here, with the state's lock let
    /// go, and go first.
    pub fn take_outgoing(&mut self) -> Vec<(String, Bytes)> {
        let mut out = self.send_unsent();
        out.append(&mut self.out);
        out
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

mod broadcast;
mod join;
mod membership;
mod purge;
mod repair;
#[cfg(test)]
mod tests;
