//! The housekeeper election (DistKV's "actor", from asyncactor), as a pure state
//! machine.
//!
//! DistKV needs, once per `cycle`, exactly one node that does housekeeping
//! (broadcasting missing ticks, purging deleted entries). The Python original
//! uses the `asyncactor` package: every node broadcasts a `ping` now and then;
//! each ping carries a short history of the previous pingers, so the pings
//! form a chain. A node whose ping is not followed by another valid ping
//! within `gap` is "it" (tagged) for the rest of the cycle. Colliding pings
//! are resolved by a total priority order, and a ping whose history cannot be
//! reconciled with ours reveals a healed network split.
//!
//! This module contains no I/O, no clocks and no randomness of its own: time
//! is passed in as milliseconds, randomness through a `&mut impl Rng`, and
//! the owner publishes the returned messages and reacts to the returned
//! events. The same inputs always give the same outputs.

use std::collections::BTreeMap;

use distkv_model::{NodeName, Value};
use rand::Rng;

/// Longest history accepted from the wire; longer ones are malformed.
///
/// Real histories are at most `splits` (default 4) long, so this only guards
/// memory against garbage.
pub const MAX_WIRE_HISTORY: usize = 64;

/// Most distinct node values remembered; further unknown names count as
/// "not ready" (guards memory against a flood of invented names).
const MAX_VALUES: usize = 1024;

/// Own `hist` messages remembered so that their echo can be ignored.
const MAX_SENT_HISTS: usize = 8;

/// Actor settings (DistKV's `actor` config). Durations are in milliseconds.
///
/// `version` orders configurations network-wide: a `vers` message with a
/// higher version replaces the local settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorConfig {
    /// Time between housekeeping terms (one ping per cycle on average).
    pub cycle: u64,
    /// Settling time: a ping not followed by another one within `gap` wins.
    pub gap: u64,
    /// Maximum length of the kept history (0 = unbounded, capped internally).
    pub nodes: usize,
    /// Maximum length of the history sent in a ping.
    pub splits: usize,
    /// Rough number of participating hosts (spreads random early pings).
    pub n_hosts: usize,
    /// Configuration version; higher wins network-wide.
    pub version: u64,
}

impl ActorConfig {
    /// The main (`ping` topic) actor defaults: cycle 10 s, gap 2 s.
    pub fn main() -> Self {
        ActorConfig {
            cycle: 10_000,
            gap: 2_000,
            nodes: 5,
            splits: 4,
            n_hosts: 10,
            version: 0,
        }
    }

    /// The delete (`del` topic) actor defaults: cycle 100 s, gap 10 s,
    /// version 1 (as DistKV's deleter).
    pub fn delete() -> Self {
        ActorConfig {
            cycle: 100_000,
            gap: 10_000,
            version: 1,
            ..Self::main()
        }
    }

    /// Whether these settings are usable (cycle ≥ 3·gap, cycle > 0,
    /// splits > 0). Invalid settings from the network are not adopted.
    pub fn is_valid(&self) -> bool {
        self.cycle > 0 && self.gap.saturating_mul(3) <= self.cycle && self.splits > 0
    }
}

/// A node's ping value: DistKV uses `(tock, tick)`; `None` = not ready.
pub type PingValue = Option<(u64, u64)>;

/// Messages on the actor's topic (the `t` field selects the kind).
#[derive(Debug, Clone, PartialEq)]
pub enum ActorMsg {
    /// Sent once at start. An `init` with our name that is not our own
    /// means another node uses it: a name collision.
    Init {
        /// The starting node.
        node: NodeName,
        /// A random number telling this start's `init` from another's with
        /// the same name, so that a duplicated delivery of our own is not
        /// taken for a collision. Python's asyncactor sends none (and one
        /// without it, with our name, is a collision).
        id: Option<u64>,
    },
    /// The sender's configuration; a higher `version` wins network-wide.
    Vers {
        /// The sender.
        node: NodeName,
        /// See [`ActorConfig::cycle`] (ms; seconds on the wire).
        cycle: u64,
        /// See [`ActorConfig::gap`] (ms; seconds on the wire).
        gap: u64,
        /// See [`ActorConfig::nodes`].
        nodes: usize,
        /// See [`ActorConfig::splits`].
        splits: usize,
        /// See [`ActorConfig::n_hosts`].
        n_hosts: usize,
        /// See [`ActorConfig::version`].
        version: u64,
    },
    /// The regular announcement.
    Ping {
        /// The sender.
        node: NodeName,
        /// The sender's value.
        value: PingValue,
        /// `[sender, previous pingers…]`, at most `splits` long.
        history: Vec<NodeName>,
    },
    /// A split-recovery announcement: one side's old history.
    Hist {
        /// The value of `history[0]`.
        value: PingValue,
        /// The old history of the sending side; `history[0]` is the sender
        /// as far as the protocol is concerned.
        history: Vec<NodeName>,
    },
}

impl ActorMsg {
    /// Builds the `vers` message announcing `cfg` on behalf of `node`.
    pub fn vers(node: &NodeName, cfg: &ActorConfig) -> ActorMsg {
        ActorMsg::Vers {
            node: node.clone(),
            cycle: cfg.cycle,
            gap: cfg.gap,
            nodes: cfg.nodes,
            splits: cfg.splits,
            n_hosts: cfg.n_hosts,
            version: cfg.version,
        }
    }

    /// The wire form: a msgpack-able map in the field order Python uses
    /// (see the MQTT transcript). Times are seconds: an integer when whole,
    /// else a float. `vers` carries `force_in: 0` like Python's.
    pub fn to_value(&self) -> Value {
        match self {
            ActorMsg::Init { node, id } => {
                let mut m = vec![
                    (Value::str("t"), Value::str("init")),
                    (Value::str("node"), name_value(node)),
                ];
                if let Some(id) = id {
                    m.push((Value::str("id"), Value::uint(*id)));
                }
                Value::Map(m)
            }
            ActorMsg::Vers {
                node,
                cycle,
                gap,
                nodes,
                splits,
                n_hosts,
                version,
            } => Value::map([
                ("t", Value::str("vers")),
                ("node", name_value(node)),
                ("cycle", ms_to_value(*cycle)),
                ("gap", ms_to_value(*gap)),
                ("nodes", Value::uint(*nodes as u64)),
                ("splits", Value::uint(*splits as u64)),
                ("n_hosts", Value::uint(*n_hosts as u64)),
                ("version", Value::uint(*version)),
                ("force_in", Value::Int(0)),
            ]),
            ActorMsg::Ping {
                node,
                value,
                history,
            } => Value::map([
                ("t", Value::str("ping")),
                ("node", name_value(node)),
                ("value", ping_value_to_value(value)),
                ("history", history_to_value(history)),
            ]),
            ActorMsg::Hist { value, history } => Value::map([
                ("t", Value::str("hist")),
                ("value", ping_value_to_value(value)),
                ("history", history_to_value(history)),
            ]),
        }
    }

    /// Parses the wire form. Returns `None` for anything malformed (missing
    /// or mistyped fields, empty names, overlong histories); never panics.
    pub fn from_value(v: &Value) -> Option<ActorMsg> {
        match v.get("t")?.as_str()? {
            "init" => Some(ActorMsg::Init {
                node: node_field(v, "node")?,
                id: match v.get("id") {
                    None => None,
                    Some(id) => Some(id.as_u64()?),
                },
            }),
            "vers" => Some(ActorMsg::Vers {
                node: node_field(v, "node")?,
                cycle: value_to_ms(v.get("cycle")?)?,
                gap: value_to_ms(v.get("gap")?)?,
                nodes: usize_field(v, "nodes")?,
                splits: usize_field(v, "splits")?,
                n_hosts: usize_field(v, "n_hosts")?,
                version: v.get("version")?.as_u64()?,
            }),
            "ping" => Some(ActorMsg::Ping {
                node: node_field(v, "node")?,
                value: value_to_ping_value(v.get("value")?)?,
                history: value_to_history(v.get("history")?)?,
            }),
            "hist" => {
                let history = value_to_history(v.get("history")?)?;
                if history.is_empty() {
                    return None;
                }
                Some(ActorMsg::Hist {
                    value: value_to_ping_value(v.get("value")?)?,
                    history,
                })
            }
            _ => None,
        }
    }

    /// The sending node: `node`, or `history[0]` for `hist`.
    pub fn sender(&self) -> Option<&str> {
        match self {
            ActorMsg::Init { node, .. }
            | ActorMsg::Vers { node, .. }
            | ActorMsg::Ping { node, .. } => Some(node),
            ActorMsg::Hist { history, .. } => history.first().map(|n| &**n),
        }
    }
}

fn name_value(n: &NodeName) -> Value {
    Value::Str(n.clone())
}

fn ms_to_value(ms: u64) -> Value {
    if ms % 1000 == 0 {
        Value::uint(ms / 1000)
    } else {
        Value::Float(ms as f64 / 1000.0)
    }
}

fn value_to_ms(v: &Value) -> Option<u64> {
    match *v {
        Value::Int(_) | Value::UInt(_) => v.as_u64()?.checked_mul(1000),
        Value::Float(f) if f.is_finite() && f >= 0.0 && f * 1000.0 < u64::MAX as f64 => {
            Some((f * 1000.0).round() as u64)
        }
        _ => None,
    }
}

fn ping_value_to_value(v: &PingValue) -> Value {
    match v {
        Some((tock, tick)) => Value::Array(vec![Value::uint(*tock), Value::uint(*tick)]),
        None => Value::Nil,
    }
}

/// `Some(None)` for nil, `Some(Some(..))` for `[tock, tick]`, `None` if
/// malformed.
fn value_to_ping_value(v: &Value) -> Option<PingValue> {
    if v.is_nil() {
        return Some(None);
    }
    match v.as_array()? {
        [a, b] => Some(Some((a.as_u64()?, b.as_u64()?))),
        _ => None,
    }
}

fn history_to_value(h: &[NodeName]) -> Value {
    Value::Array(h.iter().map(name_value).collect())
}

fn value_to_history(v: &Value) -> Option<Vec<NodeName>> {
    let a = v.as_array()?;
    if a.len() > MAX_WIRE_HISTORY {
        return None;
    }
    a.iter().map(|x| non_empty_name(x.as_str()?)).collect()
}

fn non_empty_name(s: &str) -> Option<NodeName> {
    (!s.is_empty()).then(|| NodeName::from(s))
}

fn node_field(v: &Value, key: &str) -> Option<NodeName> {
    non_empty_name(v.get(key)?.as_str()?)
}

fn usize_field(v: &Value, key: &str) -> Option<usize> {
    usize::try_from(v.get(key)?.as_u64()?).ok()
}

/// What happened, for the owner (the cluster layer) to react to.
#[derive(Debug, Clone, PartialEq)]
pub enum ActorEvent {
    /// We are "it" (the housekeeper) for this cycle.
    Tag,
    /// Our housekeeper term ended normally.
    Untag,
    /// Someone with higher priority pinged at the same time: we are not "it".
    Detag,
    /// A valid ping from `node` with `value` was accepted (raw info for the
    /// owner: raise its tick/tock).
    Ping {
        /// The pinging node.
        node: NodeName,
        /// Its value.
        value: PingValue,
    },
    /// A ready node (value not None) was seen while our own value is None:
    /// fetch state from it.
    GoodNode {
        /// The ready node.
        node: NodeName,
    },
    /// A healed split was detected: we are at position `prio` of the old
    /// local history.
    Recover {
        /// Our position in `local` (0 = act first).
        prio: usize,
        /// Our side's history before the split was noticed.
        local: Vec<NodeName>,
        /// The other side's history (with its sender in front).
        remote: Vec<NodeName>,
    },
    /// Our own `init` came back twice: another node uses our name.
    NameCollision,
}

/// Where the actor is in its ping/tag cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `start` not called yet.
    New,
    /// Waiting for the first ping.
    Starting { ping_at: u64 },
    /// Waiting to ping at `Actor::next_ping` (unless someone else does).
    Idle,
    /// We pinged; tagged at `tag_at` unless another valid ping arrives.
    Pinged { tag_at: u64 },
    /// We are "it" until `until`.
    Tagged { until: u64 },
}

/// A pending split-recovery `hist` announcement.
#[derive(Debug, Clone)]
struct Recovery {
    /// `history[0]` of the old local history (identifies our side).
    key: NodeName,
    /// When to send, unless someone from our side sends first.
    at: u64,
    /// The old local history.
    history: Vec<NodeName>,
}

/// The election state machine for one node on one actor topic.
///
/// Feed it every message received on the topic ([`Actor::handle`], own
/// messages included) and call [`Actor::poll`] whenever the clock reaches
/// [`Actor::next_deadline`]; publish the returned messages and act on the
/// returned events.
#[derive(Debug, Clone)]
pub struct Actor {
    me: NodeName,
    cfg: ActorConfig,
    enabled: bool,
    phase: Phase,
    /// Next own ping time while [`Phase::Idle`].
    next_ping: u64,
    /// Our current value.
    value: PingValue,
    /// Last value seen per node (our own: the one last sent).
    values: BTreeMap<NodeName, PingValue>,
    /// Recent pingers, latest first.
    history: Vec<NodeName>,
    /// The id of our own `init` (set at start).
    init_id: Option<u64>,
    recoveries: Vec<Recovery>,
    /// When a `hist` keyed on a node was last heard.
    hist_seen: BTreeMap<NodeName, u64>,
    /// Our own `hist` messages not yet echoed back.
    sent_hists: Vec<Vec<NodeName>>,
    /// When to re-announce our (newer) configuration.
    version_at: Option<u64>,
    /// Output produced outside `handle`/`poll`, returned by the next call.
    pending_msgs: Vec<ActorMsg>,
    pending_events: Vec<ActorEvent>,
}

/// Maximum timer transitions handled in one [`Actor::poll`] call.
const MAX_POLL_STEPS: usize = 8;

impl Actor {
    /// A new, enabled actor for node `me`; call [`Actor::start`] next.
    pub fn new(me: NodeName, cfg: ActorConfig) -> Actor {
        Actor {
            me,
            cfg,
            enabled: true,
            phase: Phase::New,
            next_ping: u64::MAX,
            value: None,
            values: BTreeMap::new(),
            history: Vec::new(),
            init_id: None,
            recoveries: Vec::new(),
            hist_seen: BTreeMap::new(),
            sent_hists: Vec::new(),
            version_at: None,
            pending_msgs: Vec::new(),
            pending_events: Vec::new(),
        }
    }

    /// Starts the actor: returns the `init` and `vers` messages to publish
    /// and schedules the first ping at `now + cycle + gap·(1.5 + rand/2)`.
    /// Calling it again does nothing.
    pub fn start(&mut self, now: u64, rng: &mut impl Rng) -> Vec<ActorMsg> {
        if self.phase != Phase::New {
            return Vec::new();
        }
        let delay = self.cycle() as f64 + self.cfg.gap as f64 * (1.5 + rng.gen::<f64>() / 2.0);
        self.phase = Phase::Starting {
            ping_at: now.saturating_add(delay as u64),
        };
        let id = rng.gen::<u64>();
        self.init_id = Some(id);
        vec![
            ActorMsg::Init {
                node: self.me.clone(),
                id: Some(id),
            },
            ActorMsg::vers(&self.me, &self.cfg),
        ]
    }

    /// Sets our current ping value (call whenever it changes; cheap). It is
    /// sent with our next ping and decides collisions.
    pub fn set_value(&mut self, v: PingValue) {
        self.value = v;
    }

    /// Handles a message received on the actor topic (our own messages come
    /// back too and are recognised by node name). Returns messages to
    /// publish and events.
    pub fn handle(
        &mut self,
        now: u64,
        msg: &ActorMsg,
        rng: &mut impl Rng,
    ) -> (Vec<ActorMsg>, Vec<ActorEvent>) {
        let mut out = std::mem::take(&mut self.pending_msgs);
        let mut ev = std::mem::take(&mut self.pending_events);
        match msg {
            ActorMsg::Init { node, id } => {
                // Our own, perhaps delivered twice, is no collision.
                if *node == self.me && (id.is_none() || *id != self.init_id) {
                    ev.push(ActorEvent::NameCollision);
                }
            }
            ActorMsg::Vers { .. } => self.handle_vers(now, msg, &mut out),
            ActorMsg::Ping {
                node,
                value,
                history,
            } => {
                let p = Incoming {
                    node,
                    value: *value,
                    history,
                    is_hist: false,
                };
                self.handle_ping(now, p, rng, &mut ev);
            }
            ActorMsg::Hist { value, history } => {
                if let Some(node) = history.first() {
                    self.note_hist(now, node);
                    if !self.is_own_hist_echo(history) {
                        let p = Incoming {
                            node,
                            value: *value,
                            history,
                            is_hist: true,
                        };
                        self.handle_ping(now, p, rng, &mut ev);
                    }
                }
            }
        }
        self.run_recoveries(now, &mut out);
        (out, ev)
    }

    /// Runs the timers: call when `now >= next_deadline()`. Returns messages
    /// to publish and events.
    pub fn poll(&mut self, now: u64, rng: &mut impl Rng) -> (Vec<ActorMsg>, Vec<ActorEvent>) {
        let mut out = std::mem::take(&mut self.pending_msgs);
        let mut ev = std::mem::take(&mut self.pending_events);
        for _ in 0..MAX_POLL_STEPS {
            if !self.step_phase(now, rng, &mut out, &mut ev) {
                break;
            }
        }
        self.run_recoveries(now, &mut out);
        if self.version_at.is_some_and(|t| t <= now) {
            self.version_at = None;
            out.push(ActorMsg::vers(&self.me, &self.cfg));
        }
        (out, ev)
    }

    /// The earliest time at which [`Actor::poll`] has something to do
    /// (`u64::MAX` = nothing scheduled; 0 = as soon as possible).
    pub fn next_deadline(&self) -> u64 {
        if !self.pending_msgs.is_empty() || !self.pending_events.is_empty() {
            return 0;
        }
        let phase = match self.phase {
            Phase::Starting { ping_at } if self.enabled => ping_at,
            Phase::Idle if self.enabled => self.next_ping,
            Phase::Pinged { tag_at } => tag_at,
            Phase::Tagged { until } => until,
            _ => u64::MAX,
        };
        let rec = self
            .recoveries
            .iter()
            .map(|r| r.at)
            .min()
            .unwrap_or(u64::MAX);
        phase.min(rec).min(self.version_at.unwrap_or(u64::MAX))
    }

    /// The current history: recent pingers, latest first.
    pub fn history(&self) -> &[NodeName] {
        &self.history
    }

    /// Whether we are "it" right now (between `Tag` and `Untag`/`Detag`).
    pub fn is_tagged(&self) -> bool {
        matches!(self.phase, Phase::Tagged { .. })
    }

    /// Whether we take part actively (see [`Actor::set_enabled`]).
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Enables or disables active participation (the delete actor: only
    /// deleter-group members take part). A disabled actor never pings and
    /// never gets tagged but still listens (history, `Ping` events).
    /// Disabling while tagged yields `Untag` on the next call; enabling
    /// clears the history and pings at the next `poll` (like asyncactor).
    pub fn set_enabled(&mut self, on: bool) {
        if on == self.enabled {
            return;
        }
        self.enabled = on;
        if on {
            self.history.clear();
            if self.phase == Phase::Idle {
                self.next_ping = 0;
            }
            return;
        }
        if self.is_tagged() {
            self.pending_events.push(ActorEvent::Untag);
        }
        if matches!(self.phase, Phase::Pinged { .. } | Phase::Tagged { .. }) {
            self.phase = Phase::Idle;
        }
        self.recoveries.clear();
        self.version_at = None;
    }

    /// The settings in effect (possibly adopted from the network).
    pub fn config(&self) -> &ActorConfig {
        &self.cfg
    }

    /// Replaces the settings. Bump `version` so the network adopts them:
    /// once started, a `vers` message is returned by the next
    /// `handle`/`poll` (`next_deadline` becomes 0).
    pub fn set_config(&mut self, cfg: ActorConfig) {
        self.cfg = cfg;
        let limit = self.hist_limit();
        self.history.truncate(limit);
        if self.phase != Phase::New {
            self.pending_msgs.push(ActorMsg::vers(&self.me, &self.cfg));
        }
    }

    // ------------------------------------------------------------ internals

    fn cycle(&self) -> u64 {
        self.cfg.cycle.max(1)
    }

    fn gap(&self) -> u64 {
        self.cfg.gap
    }

    fn hist_limit(&self) -> usize {
        match self.cfg.nodes {
            0 => MAX_WIRE_HISTORY,
            n => n.min(MAX_WIRE_HISTORY),
        }
    }

    /// One due phase transition; false if nothing was due.
    fn step_phase(
        &mut self,
        now: u64,
        rng: &mut impl Rng,
        out: &mut Vec<ActorMsg>,
        ev: &mut Vec<ActorEvent>,
    ) -> bool {
        match self.phase {
            Phase::Starting { ping_at } if now >= ping_at => {
                if self.enabled {
                    out.push(self.send_ping(now, rng));
                }
                // Our first ping only announces us (its history is based on
                // whatever arrived during start-up): never tagged for it.
                self.phase = Phase::Idle;
            }
            Phase::Idle if self.enabled && now >= self.next_ping => {
                out.push(self.send_ping(now, rng))
            }
            Phase::Pinged { tag_at } if now >= tag_at => {
                let until = tag_at.saturating_add(self.cycle().saturating_sub(self.gap() / 2));
                self.phase = Phase::Tagged { until };
                ev.push(ActorEvent::Tag);
            }
            Phase::Tagged { until } if now >= until => {
                self.phase = Phase::Idle;
                ev.push(ActorEvent::Untag);
            }
            _ => return false,
        }
        true
    }

    /// Builds our ping, updates history and timers.
    fn send_ping(&mut self, now: u64, rng: &mut impl Rng) -> ActorMsg {
        let had_history = !self.history.is_empty();
        self.remember_value(&self.me.clone(), self.value);
        let limit = self.hist_limit();
        push_front(&mut self.history, &self.me, limit);
        self.phase = if had_history {
            Phase::Pinged {
                tag_at: now.saturating_add(self.gap()),
            }
        } else {
            Phase::Idle
        };
        self.schedule_next_ping(now, rng);
        let n = self.cfg.splits.max(1).min(self.history.len());
        ActorMsg::Ping {
            node: self.me.clone(),
            value: self.value,
            history: self.history[..n].to_vec(),
        }
    }

    fn handle_vers(&mut self, now: u64, msg: &ActorMsg, out: &mut Vec<ActorMsg>) {
        let ActorMsg::Vers {
            cycle,
            gap,
            nodes,
            splits,
            n_hosts,
            version,
            ..
        } = *msg
        else {
            return;
        };
        if version > self.cfg.version {
            let cfg = ActorConfig {
                cycle,
                gap,
                nodes,
                splits,
                n_hosts,
                version,
            };
            if cfg.is_valid() {
                self.cfg = cfg;
                let limit = self.hist_limit();
                self.history.truncate(limit);
                self.version_at = None;
            }
        } else if version < self.cfg.version {
            if !self.enabled || self.phase == Phase::New {
                return;
            }
            if matches!(self.phase, Phase::Pinged { .. } | Phase::Tagged { .. }) {
                out.push(ActorMsg::vers(&self.me, &self.cfg));
            } else if let Some(pos) = self.history.iter().position(|n| *n == self.me) {
                self.version_at = Some(now.saturating_add(self.prio_delay(pos)));
            }
        } else {
            self.version_at = None;
        }
    }

    /// `gap·(1 − 2^−pos)`: the later in the history, the longer we wait for
    /// someone earlier to act.
    fn prio_delay(&self, pos: usize) -> u64 {
        let gap = self.gap();
        gap - (gap >> pos.min(63))
    }

    fn remember_value(&mut self, node: &NodeName, value: PingValue) {
        if self.values.len() < MAX_VALUES || self.values.contains_key(node) {
            self.values.insert(node.clone(), value);
        }
    }

    fn value_of(&self, node: &str) -> PingValue {
        self.values.get(node).copied().flatten()
    }

    /// Whether a ping from `a` beats one from `b` (SPEC §4.6): non-null value
    /// beats null, larger `(tock, tick)` wins, then the smaller name.
    fn has_priority(&self, a: &str, b: Option<&NodeName>) -> bool {
        let Some(b) = b else { return true };
        let (va, vb) = (self.value_of(a), self.value_of(b));
        if va != vb {
            va > vb
        } else {
            a < &**b
        }
    }

    /// A `ping` (or `hist`) from someone else.
    fn handle_ping(
        &mut self,
        now: u64,
        p: Incoming<'_>,
        rng: &mut impl Rng,
        ev: &mut Vec<ActorEvent>,
    ) {
        if *p.node == self.me {
            return;
        }
        let prev = self.history.first().cloned();
        let again = prev.as_ref() == Some(p.node);
        if again && p.is_hist {
            return; // nothing new
        }
        self.remember_value(p.node, p.value);
        if !self.enabled {
            if !again {
                self.handle_passive(p, ev);
            }
            return;
        }
        if self.value.is_none() && p.value.is_some() {
            ev.push(ActorEvent::GoodNode {
                node: p.node.clone(),
            });
        }
        if again {
            self.accept_repeat(now, p, rng, ev);
            return;
        }
        if p.extends(&self.history) && !self.is_crossing(&p) {
            if !p.is_hist {
                // A standard ping following the last one.
                let limit = self.hist_limit();
                push_front(&mut self.history, p.node, limit);
                self.schedule_next_ping(now, rng);
                self.superseded(ev, ActorEvent::Untag);
                ev.push(ActorEvent::Ping {
                    node: p.node.clone(),
                    value: p.value,
                });
            }
            return;
        }
        // Colliding pings.
        let same_prev = self.is_crossing(&p)
            || (!p.history.is_empty() && p.history.get(1) == self.history.get(1));
        let prefer_new = self.has_priority(p.node, prev.as_ref());
        let old = std::mem::take(&mut self.history);
        if prefer_new {
            self.history = p.history.iter().take(self.hist_limit()).cloned().collect();
            self.superseded(ev, ActorEvent::Detag);
            self.schedule_next_ping(now, rng);
            if !p.is_hist {
                ev.push(ActorEvent::Ping {
                    node: p.node.clone(),
                    value: p.value,
                });
            }
        } else {
            self.history = old.clone();
        }
        if !same_prev {
            self.detect_split(now, &p, old, ev);
        }
    }

    /// The last pinger pinged again (nobody followed it, or we missed
    /// the ping in between). asyncactor ignores this; we take its newer view
    /// and restart our ping timer, so that we don't ping on a stale view and
    /// collide with it. (We are never pinged/tagged here: then
    /// `history[0]` would be us.)
    fn accept_repeat(
        &mut self,
        now: u64,
        p: Incoming<'_>,
        rng: &mut impl Rng,
        ev: &mut Vec<ActorEvent>,
    ) {
        if p.history.first() == Some(p.node) {
            self.history = p.history.iter().take(self.hist_limit()).cloned().collect();
        }
        self.schedule_next_ping(now, rng);
        ev.push(ActorEvent::Ping {
            node: p.node.clone(),
            value: p.value,
        });
    }

    /// Crossing pings: a ping that follows ours while we are still
    /// [`Phase::Pinged`] cannot have seen our current ping (a real follower
    /// waits at least a cycle), so it follows an older one of ours. Each of
    /// us would accept the other's as an extension and nobody would be
    /// tagged, so it is treated as a collision instead (decided by priority).
    fn is_crossing(&self, p: &Incoming<'_>) -> bool {
        !p.is_hist && matches!(self.phase, Phase::Pinged { .. })
    }

    /// A disabled actor only follows the history and reports pings.
    fn handle_passive(&mut self, p: Incoming<'_>, ev: &mut Vec<ActorEvent>) {
        let limit = self.hist_limit();
        if p.extends(&self.history) {
            if !p.is_hist {
                push_front(&mut self.history, p.node, limit);
            }
        } else if self.has_priority(p.node, self.history.first()) {
            self.history = p.history.iter().take(limit).cloned().collect();
        }
        if !p.is_hist {
            ev.push(ActorEvent::Ping {
                node: p.node.clone(),
                value: p.value,
            });
        }
    }

    /// Someone else's ping superseded ours: leave the pinged/tagged state,
    /// reporting `end` if we were tagged.
    fn superseded(&mut self, ev: &mut Vec<ActorEvent>, end: ActorEvent) {
        match self.phase {
            Phase::Tagged { .. } => {
                ev.push(end);
                self.phase = Phase::Idle;
            }
            Phase::Pinged { .. } => self.phase = Phase::Idle,
            _ => {}
        }
    }

    /// An irreconcilable history: a healed split (or a newcomer). If we are
    /// ready and on the old local history, report it and schedule our side's
    /// `hist` announcement.
    fn detect_split(
        &mut self,
        now: u64,
        p: &Incoming<'_>,
        old: Vec<NodeName>,
        ev: &mut Vec<ActorEvent>,
    ) {
        if self.value.is_none() {
            return;
        }
        let Some(pos) = old.iter().position(|n| *n == self.me) else {
            return;
        };
        let mut remote = p.history.to_vec();
        if !p.is_hist {
            push_front(&mut remote, p.node, 0);
        }
        ev.push(ActorEvent::Recover {
            prio: pos,
            local: old.clone(),
            remote,
        });
        self.schedule_recovery(now, pos, old);
    }

    fn schedule_recovery(&mut self, now: u64, pos: usize, old: Vec<NodeName>) {
        let Some(key) = old.first().cloned() else {
            return;
        };
        if self.recoveries.iter().any(|r| r.key == key) {
            return; // already waiting
        }
        if let Some(&t) = self.hist_seen.get(&key) {
            if now.saturating_sub(t) <= self.gap().saturating_mul(2) {
                return; // our side has just announced itself
            }
        }
        self.recoveries.push(Recovery {
            key,
            at: now.saturating_add(self.prio_delay(pos)),
            history: old,
        });
    }

    /// Sends the due recovery announcements.
    fn run_recoveries(&mut self, now: u64, out: &mut Vec<ActorMsg>) {
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.recoveries)
            .into_iter()
            .partition(|r| r.at <= now);
        self.recoveries = keep;
        for r in due {
            let n = self.cfg.splits.max(1).min(r.history.len());
            let history = r.history[..n].to_vec();
            if self.sent_hists.len() >= MAX_SENT_HISTS {
                self.sent_hists.remove(0);
            }
            self.sent_hists.push(history.clone());
            out.push(ActorMsg::Hist {
                value: self.value_of(&r.key),
                history,
            });
        }
    }

    /// A `hist` keyed on `key` was heard: our side (if it is ours) has
    /// announced itself, so we need not.
    fn note_hist(&mut self, now: u64, key: &NodeName) {
        self.recoveries.retain(|r| r.key != *key);
        let horizon = now.saturating_sub(self.cycle().saturating_mul(2));
        self.hist_seen.retain(|_, t| *t >= horizon);
        if self.hist_seen.len() < MAX_VALUES {
            self.hist_seen.insert(key.clone(), now);
        }
    }

    fn is_own_hist_echo(&mut self, history: &[NodeName]) -> bool {
        match self.sent_hists.iter().position(|h| h == history) {
            Some(i) => {
                self.sent_hists.remove(i);
                true
            }
            None => false,
        }
    }

    fn schedule_next_ping(&mut self, now: u64, rng: &mut impl Rng) {
        let t = self.time_to_next_ping(rng);
        let delay = self.cycle() as f64 + self.gap() as f64 * t;
        self.next_ping = now.saturating_add(delay as u64);
    }

    /// Time until our next ping if none arrives meanwhile, in units of `gap`
    /// on top of one `cycle` (asyncactor's `_time_to_next_ping`).
    fn time_to_next_ping(&self, rng: &mut impl Rng) -> f64 {
        let Some(first) = self.history.first() else {
            return 1.9 - rng.gen::<f64>() / 5.0; // we might be alone
        };
        if *first == self.me {
            return 2.0; // we sent the last ping
        }
        let nodes = self.cfg.nodes;
        // Position (1-based) of the first ready node and of ourselves.
        let (mut p, mut s, mut lv) = (0usize, 0usize, 1usize);
        for h in &self.history {
            if p == 0 && self.value_of(h).is_some() {
                p = lv;
            }
            if *h == self.me {
                s = lv;
            }
            lv += 1;
            if nodes > 0 && lv > nodes {
                break;
            }
        }
        if self.value.is_none() && p > lv / 2 {
            // The first ready node is far back: don't let unready ones take over.
            return 2.0 + rng.gen::<f64>() / 3.0;
        }
        let todo = if nodes > 0 {
            nodes as i64 - self.history.len() as i64
        } else {
            1
        };
        let total = self.values.len().max(self.cfg.n_hosts).max(1);
        ping_delay(s.checked_sub(1), lv, todo, total, rng)
    }
}

/// asyncactor's `ping_delay`, in `gap` units (0‥2): on-chain nodes use
/// `1 − 2^−(length−pos)/2` (the oldest first); off-chain nodes rarely try an
/// early insert (0‥⅓), else a late fallback (1.5‥2).
fn ping_delay(
    pos: Option<usize>,
    length: usize,
    todo: i64,
    total: usize,
    rng: &mut impl Rng,
) -> f64 {
    if let Some(pos) = pos {
        let sh = length.saturating_sub(pos).min(62) as u32;
        return 1.0 - 1.0 / (1u64 << sh) as f64 / 2.0;
    }
    let f = if todo > 0 { todo as f64 } else { total as f64 };
    if rng.gen::<f64>() < 1.0 / f / total as f64 {
        rng.gen::<f64>() / 3.0
    } else {
        1.5 + rng.gen::<f64>() / 2.0
    }
}

/// A received `ping` or `hist`, normalised.
struct Incoming<'a> {
    node: &'a NodeName,
    value: PingValue,
    history: &'a [NodeName],
    is_hist: bool,
}

impl Incoming<'_> {
    /// Whether this message follows the last ping we saw
    /// (`history[1:2] == ours[0:1]`).
    fn extends(&self, ours: &[NodeName]) -> bool {
        !self.history.is_empty() && self.history.get(1) == ours.first()
    }
}

/// asyncactor's `NodeList +=`: move `name` to the front; if that removed it
/// from the middle, or the list is full, drop the last entry so stale nodes
/// fade out. `maxlen` 0 = unbounded.
fn push_front(list: &mut Vec<NodeName>, name: &NodeName, maxlen: usize) {
    let found = list.iter().position(|n| n == name);
    if let Some(i) = found {
        list.remove(i);
    }
    if maxlen > 0
        && !list.is_empty()
        && (found.is_some_and(|i| i < list.len()) || list.len() >= maxlen)
    {
        list.pop();
    }
    list.insert(0, name.clone());
    if maxlen > 0 {
        list.truncate(maxlen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distkv_model::codec;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn name(s: &str) -> NodeName {
        NodeName::from(s)
    }

    fn names(s: &[&str]) -> Vec<NodeName> {
        s.iter().map(|n| name(n)).collect()
    }

    /// Fast settings: cycle 1 s, gap 200 ms.
    fn fast() -> ActorConfig {
        ActorConfig {
            cycle: 1000,
            gap: 200,
            ..ActorConfig::main()
        }
    }

    /// One message in flight: `(from, to, msg)`.
    type Flight = (usize, usize, ActorMsg);

    /// A deterministic network: every published message reaches every
    /// linked actor (sender included) after 1..=`max_delay` ms.
    struct Sim {
        actors: Vec<Actor>,
        rng: StdRng,
        now: u64,
        seq: u64,
        queue: BTreeMap<(u64, u64), Flight>,
        max_delay: u64,
        /// Partition side per actor; used while `partitioned`.
        side: Vec<u8>,
        partitioned: bool,
        events: Vec<(u64, usize, ActorEvent)>,
        published: Vec<(u64, usize, ActorMsg)>,
        /// Most actors tagged at the same instant.
        max_tagged: usize,
    }

    impl Sim {
        fn new(nodes: &[(&str, PingValue)], cfg: ActorConfig, seed: u64, max_delay: u64) -> Sim {
            let actors = nodes
                .iter()
                .map(|(n, v)| {
                    let mut a = Actor::new(name(n), cfg.clone());
                    a.set_value(*v);
                    a
                })
                .collect::<Vec<_>>();
            Sim {
                side: vec![0; actors.len()],
                actors,
                rng: StdRng::seed_from_u64(seed),
                now: 0,
                seq: 0,
                queue: BTreeMap::new(),
                max_delay,
                partitioned: false,
                events: Vec::new(),
                published: Vec::new(),
                max_tagged: 0,
            }
        }

        fn start_all(&mut self) {
            for i in 0..self.actors.len() {
                let out = self.actors[i].start(self.now, &mut self.rng);
                self.publish(i, out);
            }
        }

        fn linked(&self, a: usize, b: usize) -> bool {
            !self.partitioned || self.side[a] == self.side[b]
        }

        fn publish(&mut self, from: usize, msgs: Vec<ActorMsg>) {
            for m in msgs {
                // Go through the wire form, as the real transport does.
                let m = ActorMsg::from_value(&m.to_value()).expect("own message must parse");
                self.published.push((self.now, from, m.clone()));
                for to in 0..self.actors.len() {
                    if self.linked(from, to) {
                        let at = self.now + self.rng.gen_range(1..=self.max_delay);
                        self.queue.insert((at, self.seq), (from, to, m.clone()));
                        self.seq += 1;
                    }
                }
            }
        }

        fn record(&mut self, who: usize, out: Vec<ActorMsg>, ev: Vec<ActorEvent>) {
            for e in ev {
                self.events.push((self.now, who, e));
            }
            self.publish(who, out);
        }

        fn run_until(&mut self, end: u64) {
            for _ in 0..10_000_000u64 {
                let next_msg = self.queue.keys().next().map_or(u64::MAX, |k| k.0);
                let next_dl = self
                    .actors
                    .iter()
                    .map(Actor::next_deadline)
                    .min()
                    .unwrap_or(u64::MAX);
                let t = next_msg.min(next_dl).max(self.now);
                if t > end {
                    self.now = end;
                    return;
                }
                self.now = t;
                while let Some(e) = self.queue.first_entry() {
                    if e.key().0 > t {
                        break;
                    }
                    let (_, (_, to, m)) = e.remove_entry();
                    let (out, ev) = self.actors[to].handle(t, &m, &mut self.rng);
                    self.record(to, out, ev);
                }
                for i in 0..self.actors.len() {
                    if self.actors[i].next_deadline() <= t {
                        let (out, ev) = self.actors[i].poll(t, &mut self.rng);
                        self.record(i, out, ev);
                    }
                }
                let tagged = self.actors.iter().filter(|a| a.is_tagged()).count();
                self.max_tagged = self.max_tagged.max(tagged);
            }
            panic!("simulation does not progress");
        }

        fn events_of(&self, pred: impl Fn(&ActorEvent) -> bool) -> Vec<(u64, usize)> {
            self.events
                .iter()
                .filter(|(_, _, e)| pred(e))
                .map(|(t, i, _)| (*t, *i))
                .collect()
        }
    }

    // ------------------------------------------------------------ wire

    #[test]
    fn wire_round_trip() {
        let msgs = vec![
            ActorMsg::Init {
                node: name("n1"),
                id: None,
            },
            ActorMsg::Init {
                node: name("n1"),
                id: Some(u64::MAX),
            },
            ActorMsg::vers(&name("n1"), &ActorConfig::main()),
            ActorMsg::vers(&name("n1"), &fast()),
            ActorMsg::Vers {
                node: name("n2"),
                cycle: 1234,
                gap: 1,
                nodes: 0,
                splits: 9,
                n_hosts: 100,
                version: u64::MAX,
            },
            ActorMsg::Ping {
                node: name("n1"),
                value: Some((345, 16)),
                history: names(&["n1", "n2"]),
            },
            ActorMsg::Ping {
                node: name("n2"),
                value: None,
                history: names(&["n2"]),
            },
            ActorMsg::Ping {
                node: name("n3"),
                value: Some((u64::MAX, 0)),
                history: vec![],
            },
            ActorMsg::Hist {
                value: Some((1, 2)),
                history: names(&["a", "b", "c"]),
            },
            ActorMsg::Hist {
                value: None,
                history: names(&["a"]),
            },
        ];
        for m in msgs {
            let bytes = codec::to_vec(&m.to_value());
            let back = codec::decode(&bytes).expect("decodes");
            assert_eq!(ActorMsg::from_value(&back), Some(m.clone()), "{m:?}");
        }
        let v = ActorMsg::vers(&name("x"), &fast()).to_value();
        assert_eq!(v.get("cycle"), Some(&Value::Int(1)));
        assert_eq!(v.get("gap"), Some(&Value::Float(0.2)));
    }

    #[test]
    fn transcript_ping_and_vers() {
        let bytes = distkv_model::hex::decode(
            "84a174a470696e67a46e6f6465a26e31a576616c756592cd015910a7686973746f727992a26e31a26e32",
        )
        .expect("hex");
        let v = codec::decode(&bytes).expect("decodes");
        let m = ActorMsg::from_value(&v).expect("parses");
        assert_eq!(
            m,
            ActorMsg::Ping {
                node: name("n1"),
                value: Some((345, 16)),
                history: names(&["n1", "n2"]),
            }
        );
        assert_eq!(m.sender(), Some("n1"));
        assert_eq!(codec::to_vec(&m.to_value()), bytes);

        let vers = distkv_model::hex::decode(
            "89a174a476657273a46e6f6465a26e32a56379636c650aa367617002a56e6f64657305a673706c69747304\
             a76e5f686f7374730aa776657273696f6e00a8666f7263655f696e00",
        ).expect("hex");
        let m = ActorMsg::from_value(&codec::decode(&vers).unwrap()).expect("parses");
        assert_eq!(m, ActorMsg::vers(&name("n2"), &ActorConfig::main()));
        assert_eq!(codec::to_vec(&m.to_value()), vers);

        let init = distkv_model::hex::decode("82a174a4696e6974a46e6f6465a26e32").expect("hex");
        let m = ActorMsg::from_value(&codec::decode(&init).unwrap()).expect("parses");
        assert_eq!(
            m,
            ActorMsg::Init {
                node: name("n2"),
                id: None
            }
        );
        assert_eq!(codec::to_vec(&m.to_value()), init);

        let hist = ActorMsg::Hist {
            value: None,
            history: names(&["q", "r"]),
        };
        assert_eq!(hist.sender(), Some("q"));
    }

    #[test]
    fn malformed_messages() {
        let s = Value::str;
        let good_hist = Value::Array(vec![s("a")]);
        let huge = Value::Array((0..10_000).map(|i| s(&format!("n{i}"))).collect());
        let bad = vec![
            Value::Nil,
            Value::Int(3),
            s("ping"),
            Value::Array(vec![s("t"), s("ping")]),
            Value::map([]),
            Value::map([("t", s("nope")), ("node", s("a"))]),
            Value::map([("t", Value::Int(1)), ("node", s("a"))]),
            Value::map([("t", s("init"))]),
            Value::map([("t", s("init")), ("node", Value::Int(1))]),
            Value::map([("t", s("init")), ("node", s(""))]),
            Value::map([
                ("t", s("ping")),
                ("node", s("a")),
                ("history", good_hist.clone()),
            ]),
            Value::map([("t", s("ping")), ("node", s("a")), ("value", Value::Nil)]),
            Value::map([
                ("t", s("ping")),
                ("node", s("a")),
                ("value", Value::Array(vec![Value::Int(1)])),
                ("history", good_hist.clone()),
            ]),
            Value::map([
                ("t", s("ping")),
                ("node", s("a")),
                ("value", Value::Array(vec![Value::Int(-1), Value::Int(2)])),
                ("history", good_hist.clone()),
            ]),
            Value::map([
                ("t", s("ping")),
                ("node", s("a")),
                ("value", s("x")),
                ("history", good_hist.clone()),
            ]),
            Value::map([
                ("t", s("ping")),
                ("node", s("a")),
                ("value", Value::Nil),
                ("history", s("a")),
            ]),
            Value::map([
                ("t", s("ping")),
                ("node", s("a")),
                ("value", Value::Nil),
                ("history", Value::Array(vec![s("a"), Value::Int(2)])),
            ]),
            Value::map([
                ("t", s("ping")),
                ("node", s("a")),
                ("value", Value::Nil),
                ("history", huge.clone()),
            ]),
            Value::map([
                ("t", s("hist")),
                ("value", Value::Nil),
                ("history", Value::Array(vec![])),
            ]),
            Value::map([("t", s("hist")), ("value", Value::Nil), ("history", huge)]),
            Value::map([
                ("t", s("vers")),
                ("node", s("a")),
                ("cycle", Value::Int(10)),
            ]),
        ];
        // A `vers` whose cycle is no usable number of seconds.
        let bad_vers = [
            Value::Float(f64::NAN),
            Value::Int(-10),
            Value::UInt(u64::MAX),
            Value::Float(1e300),
        ]
        .map(|cycle| {
            Value::map([
                ("t", s("vers")),
                ("node", s("a")),
                ("cycle", cycle),
                ("gap", Value::Int(1)),
                ("nodes", Value::Int(5)),
                ("splits", Value::Int(4)),
                ("n_hosts", Value::Int(10)),
                ("version", Value::Int(9)),
            ])
        });
        for v in bad.iter().chain(&bad_vers) {
            assert_eq!(ActorMsg::from_value(v), None, "{v:?}");
        }

        // Parseable but hostile messages: handled without panic or adoption.
        let mut rng = StdRng::seed_from_u64(1);
        let mut a = Actor::new(name("me"), fast());
        a.set_value(Some((1, 1)));
        a.start(0, &mut rng);
        let hostile = [
            ActorMsg::Vers {
                node: name("z"),
                cycle: 0,
                gap: u64::MAX,
                nodes: usize::MAX,
                splits: 0,
                n_hosts: 0,
                version: u64::MAX,
            },
            ActorMsg::Ping {
                node: name("z"),
                value: None,
                history: vec![],
            },
            ActorMsg::Ping {
                node: name("me"),
                value: Some((u64::MAX, u64::MAX)),
                history: names(&["x", "me", "me"]),
            },
            ActorMsg::Hist {
                value: Some((u64::MAX, 0)),
                history: names(&["me"]),
            },
            ActorMsg::Ping {
                node: name("y"),
                value: Some((u64::MAX, u64::MAX)),
                history: (0..MAX_WIRE_HISTORY)
                    .map(|i| name(&format!("h{i}")))
                    .collect(),
            },
        ];
        let mut t = 0;
        for m in hostile.iter().cycle().take(50) {
            t += 37;
            a.handle(t, m, &mut rng);
            if a.next_deadline() <= t {
                a.poll(t, &mut rng);
            }
        }
        assert_eq!(a.config(), &fast(), "invalid config must not be adopted");
        assert!(a.history().len() <= fast().nodes);
    }

    /// Random (parseable) messages in random order never panic.
    #[test]
    fn fuzz_handle() {
        let pool = names(&["a", "b", "c", "me"]);
        for seed in 0..50 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut a = Actor::new(name("me"), fast());
            a.start(0, &mut rng);
            let mut t = 0u64;
            for _ in 0..300 {
                t += rng.gen_range(0..400);
                if rng.gen_bool(0.3) {
                    a.set_value(
                        rng.gen_bool(0.5)
                            .then(|| (rng.gen_range(0..5), rng.gen_range(0..5))),
                    );
                }
                let pick = |rng: &mut StdRng| pool[rng.gen_range(0..pool.len())].clone();
                let hist: Vec<NodeName> =
                    (0..rng.gen_range(0..6)).map(|_| pick(&mut rng)).collect();
                let value = rng
                    .gen_bool(0.7)
                    .then(|| (rng.gen_range(0..5), rng.gen_range(0..5)));
                let m = match rng.gen_range(0..5) {
                    0 => ActorMsg::Init {
                        node: pick(&mut rng),
                        id: rng.gen_bool(0.5).then(|| rng.gen_range(0..3)),
                    },
                    1 => ActorMsg::Vers {
                        node: pick(&mut rng),
                        cycle: rng.gen_range(0..3000),
                        gap: rng.gen_range(0..1000),
                        nodes: rng.gen_range(0..8),
                        splits: rng.gen_range(0..8),
                        n_hosts: rng.gen_range(0..8),
                        version: rng.gen_range(0..4),
                    },
                    2 if !hist.is_empty() => ActorMsg::Hist {
                        value,
                        history: hist,
                    },
                    _ => ActorMsg::Ping {
                        node: pick(&mut rng),
                        value,
                        history: hist,
                    },
                };
                a.handle(t, &m, &mut rng);
                if rng.gen_bool(0.5) && a.next_deadline() <= t {
                    a.poll(t, &mut rng);
                }
            }
        }
    }

    #[test]
    fn node_list_push_front() {
        // asyncactor's NodeList doctest.
        let mut l = Vec::new();
        let steps = [
            ("a", vec!["a"]),
            ("a", vec!["a"]),
            ("b", vec!["b", "a"]),
            ("a", vec!["a", "b"]),
            ("c", vec!["c", "a", "b"]),
            ("d", vec!["d", "c", "a"]),
            ("c", vec!["c", "d"]),
        ];
        for (n, want) in steps {
            push_front(&mut l, &name(n), 3);
            assert_eq!(l, names(&want));
        }
    }

    #[test]
    fn priority_order() {
        let mut a = Actor::new(name("me"), fast());
        a.remember_value(&name("x"), None);
        a.remember_value(&name("y"), Some((1, 5)));
        a.remember_value(&name("z"), Some((2, 0)));
        a.remember_value(&name("w"), Some((2, 0)));
        assert!(a.has_priority("y", Some(&name("x"))));
        assert!(!a.has_priority("x", Some(&name("y"))));
        assert!(a.has_priority("z", Some(&name("y"))));
        assert!(a.has_priority("w", Some(&name("z"))));
        assert!(!a.has_priority("z", Some(&name("w"))));
    }

    // ------------------------------------------------------------ election

    /// All actors ready: Tags happen, rotate, and never overlap.
    #[test]
    fn single_housekeeper() {
        let cfg = fast();
        for seed in 0..200 {
            let nodes = [
                ("a", Some((10, 1))),
                ("b", Some((10, 2))),
                ("c", Some((10, 3))),
            ];
            let mut sim = Sim::new(&nodes, cfg.clone(), seed, cfg.gap / 4 - 1);
            sim.start_all();
            sim.run_until(20 * cfg.cycle);
            let tags = sim.events_of(|e| *e == ActorEvent::Tag);
            assert!(
                tags.first().is_some_and(|t| t.0 < 5 * cfg.cycle),
                "seed {seed}: first tag {tags:?}"
            );
            assert!(tags.len() >= 12, "seed {seed}: only {} tags", tags.len());
            assert!(
                sim.max_tagged <= 1,
                "seed {seed}: {} tagged at once",
                sim.max_tagged
            );
            let untags = sim.events_of(|e| matches!(e, ActorEvent::Untag | ActorEvent::Detag));
            assert!(untags.len() + 1 >= tags.len(), "seed {seed}");
        }
    }

    #[test]
    fn deterministic() {
        let run = |seed| {
            let nodes = [("a", Some((10, 1))), ("b", None), ("c", Some((9, 3)))];
            let mut sim = Sim::new(&nodes, fast(), seed, 20);
            sim.start_all();
            sim.run_until(15_000);
            (sim.events, sim.published)
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7).1, run(8).1);
    }

    /// {a,b} and {c,d} partitioned: both sides elect; after healing both
    /// sides see a Recover within two cycles.
    #[test]
    fn split_and_heal() {
        let cfg = fast();
        for seed in 0..200 {
            let nodes = [
                ("a", Some((10, 1))),
                ("b", Some((11, 2))),
                ("c", Some((12, 3))),
                ("d", Some((9, 4))),
            ];
            let mut sim = Sim::new(&nodes, cfg.clone(), seed, 20);
            sim.side = vec![0, 0, 1, 1];
            sim.start_all();
            sim.run_until(3 * cfg.cycle);
            sim.partitioned = true;
            let split_at = sim.now;
            sim.run_until(split_at + 6 * cfg.cycle);
            let heal_at = sim.now;
            let tags = sim.events_of(|e| *e == ActorEvent::Tag);
            let during = |side: u8| {
                tags.iter().any(|&(t, i)| {
                    t > split_at + 2 * cfg.cycle && t <= heal_at && sim.side[i] == side
                })
            };
            assert!(during(0) && during(1), "seed {seed}: both sides elect");
            sim.partitioned = false;
            sim.run_until(heal_at + 2 * cfg.cycle);
            let rec = sim.events_of(|e| matches!(e, ActorEvent::Recover { .. }));
            for side in [0, 1] {
                assert!(
                    rec.iter().any(|&(t, i)| t > heal_at && sim.side[i] == side),
                    "seed {seed}: no recovery on side {side}: {rec:?}"
                );
            }
            for (_, i, e) in &sim.events {
                if let ActorEvent::Recover { prio, local, .. } = e {
                    assert_eq!(local.get(*prio), Some(&sim.actors[*i].me));
                }
            }
            // Afterwards the cluster settles to one housekeeper again.
            let settle = sim.now + 3 * cfg.cycle;
            sim.run_until(settle);
            sim.max_tagged = 0;
            sim.run_until(settle + 5 * cfg.cycle);
            assert!(sim.max_tagged <= 1, "seed {seed}: still split");
        }
    }

    #[test]
    fn good_node_for_unready() {
        let nodes = [("a", Some((5, 5))), ("b", None)];
        let mut sim = Sim::new(&nodes, fast(), 3, 20);
        sim.start_all();
        sim.run_until(5_000);
        let good: Vec<_> = sim
            .events
            .iter()
            .filter_map(|(_, i, e)| match e {
                ActorEvent::GoodNode { node } => Some((*i, node.clone())),
                _ => None,
            })
            .collect();
        assert!(!good.is_empty());
        assert!(good.iter().all(|(i, n)| *i == 1 && **n == *"a"), "{good:?}");
    }

    #[test]
    fn name_collision() {
        let nodes = [
            ("x", Some((1, 1))),
            ("x", Some((1, 2))),
            ("y", Some((1, 3))),
        ];
        let mut sim = Sim::new(&nodes, fast(), 5, 20);
        sim.start_all();
        sim.run_until(500);
        let hits = sim.events_of(|e| *e == ActorEvent::NameCollision);
        let who: Vec<usize> = hits.iter().map(|h| h.1).collect();
        assert_eq!(who.len(), 2, "{hits:?}");
        assert!(who.contains(&0) && who.contains(&1));
        // A single node seeing its own init is fine, even delivered twice
        // (a bus may duplicate a message); another start's is not.
        let mut rng = StdRng::seed_from_u64(0);
        let mut a = Actor::new(name("x"), fast());
        let out = a.start(0, &mut rng);
        for t in [5, 6] {
            let (_, ev) = a.handle(t, &out[0], &mut rng);
            assert!(ev.is_empty());
        }
        for other in [None, Some(1)] {
            let msg = ActorMsg::Init {
                node: name("x"),
                id: other,
            };
            let (_, ev) = a.handle(7, &msg, &mut rng);
            assert_eq!(ev, vec![ActorEvent::NameCollision]);
        }
    }

    #[test]
    fn disabled_actor_listens_only() {
        let nodes = [
            ("a", Some((1, 1))),
            ("b", Some((1, 2))),
            ("c", Some((1, 3))),
        ];
        let mut sim = Sim::new(&nodes, fast(), 11, 20);
        sim.actors[2].set_enabled(false);
        sim.start_all();
        sim.run_until(10_000);
        assert!(!sim
            .published
            .iter()
            .any(|(_, i, m)| *i == 2 && matches!(m, ActorMsg::Ping { .. })));
        assert!(!sim
            .events
            .iter()
            .any(|(_, i, e)| *i == 2 && *e == ActorEvent::Tag));
        assert!(sim
            .events
            .iter()
            .any(|(_, i, e)| *i == 2 && matches!(e, ActorEvent::Ping { .. })));
        assert!(!sim.actors[2].history().is_empty());
        // Enabling makes it take part.
        sim.actors[2].set_enabled(true);
        sim.run_until(30_000);
        assert!(sim
            .published
            .iter()
            .any(|(_, i, m)| *i == 2 && matches!(m, ActorMsg::Ping { .. })));
        assert!(sim
            .events
            .iter()
            .any(|(_, i, e)| *i == 2 && *e == ActorEvent::Tag));
    }

    #[test]
    fn version_negotiation() {
        let nodes = [("a", Some((1, 1))), ("b", Some((1, 2)))];
        let mut sim = Sim::new(&nodes, fast(), 2, 20);
        let newer = ActorConfig {
            cycle: 1500,
            version: 3,
            ..fast()
        };
        sim.actors[1].set_config(newer.clone());
        sim.start_all();
        sim.run_until(5_000);
        assert_eq!(sim.actors[0].config(), &newer);
        // An outdated vers is answered by someone on the chain.
        let t0 = sim.now;
        sim.publish(0, vec![ActorMsg::vers(&name("z"), &fast())]);
        sim.run_until(t0 + 1000);
        let answers = sim
            .published
            .iter()
            .filter(|(t, _, m)| *t > t0 && matches!(m, ActorMsg::Vers { version: 3, .. }))
            .count();
        assert!(answers >= 1, "{answers}");
        // A later config change propagates too.
        let newest = ActorConfig {
            version: 5,
            ..newer
        };
        sim.actors[0].set_config(newest.clone());
        assert_eq!(sim.actors[0].next_deadline(), 0);
        sim.run_until(t0 + 2000);
        assert_eq!(sim.actors[1].config(), &newest);
    }
}
