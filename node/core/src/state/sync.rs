//! Tick bookkeeping for replication: what the cluster layer asks of the
//! state to find and repair gaps (the repair protocol of `cluster::core`).
//!
//! A node learns other nodes' highest ticks (pings, `info.ticks`); every
//! tick up to there that it has neither present nor superseded is
//! *missing*. It asks for missing ticks; nodes that hold them remember the
//! request (*reported*) and answer with the entry (present), or say the
//! tick is superseded (`known`) or deleted. A tick seen in any message from
//! another node is no longer reported: someone else already answered.

use distkv_model::{Chain, NodeName, NodeSet, RangeSet, UpdateEvent};

use super::State;

/// How far beyond a node's known tick another may report it. A node's
/// counter only grows by its own changes, so a bigger leap is forged or
/// corrupt, and adopting it could exhaust the node's ticks.
pub const MAX_TICK_LEAP: u64 = 1 << 32;

/// Who reports an event to this node.
#[derive(Clone, Copy)]
pub enum Reporter<'a> {
    /// A client's `update` action. `live` says whether a node is running in
    /// the cluster now.
    Client {
        /// Whether a node is running in the cluster now.
        live: &'a dyn Fn(&str) -> bool,
    },
    /// Another node, by name (it speaks for its own counter).
    Peer(&'a str),
}

/// An event with ticks that cannot be true.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Forged {
    /// It names this node with a tick beyond its own counter.
    #[error("it names this node's tick {tick}, beyond its own counter {ours}")]
    OwnTick {
        /// The tick named.
        tick: u64,
        /// This node's tick.
        ours: u64,
    },
    /// A client's change of a running node.
    #[error(
        "node {node} is running: its changes come from itself (update restores changes of \
         nodes that are gone)"
    )]
    LiveNode {
        /// The node.
        node: NodeName,
    },
    /// A tick far beyond the node's known counter.
    #[error("it names {node}:{tick}, far beyond that node's known tick {known}")]
    Leap {
        /// The node.
        node: NodeName,
        /// The tick named.
        tick: u64,
        /// Its known tick here.
        known: u64,
    },
}

/// What this node can tell others about the ticks they reported missing.
#[derive(Debug, Default)]
pub struct Answers {
    /// Present entries, as events with their full chains.
    pub entries: Vec<UpdateEvent>,
    /// Ticks in no chain any more.
    pub known: NodeSet,
    /// Ticks of deleted entries.
    pub deleted: NodeSet,
}

impl State {
    /// Whether the ticks of `chain` are believable coming from `by`
    /// (before anything of it is applied or learned):
    /// * no link names this node with a tick beyond its own counter (only
    ///   a peer may name up to [`MAX_TICK_LEAP`] more: this node may run
    ///   from an old copy of its files);
    /// * a client's head link names neither this node nor a running one,
    ///   and a client's link names a running node only with a tick it has
    ///   reached;
    /// * no link names a tick more than [`MAX_TICK_LEAP`] beyond what is
    ///   known of its node, except a peer speaking for itself.
    pub fn vet(&self, chain: &Chain, by: Reporter<'_>) -> Result<(), Forged> {
        chain.links().iter().enumerate().try_for_each(|(i, l)| {
            let known = self.node_info(&l.node).and_then(|n| n.tick);
            self.vet_link(&l.node, known, l.tick, i == 0, by)
        })
    }

    /// Whether another node (`sender`) may raise `node`'s known tick to
    /// `tick` (`info.ticks`, `known`, `deleted`): [`State::vet`]'s rules
    /// for a link that heads no change.
    pub fn believable_tick(&self, node: &str, tick: u64, sender: &str) -> bool {
        let known = self.nodes.get(node).and_then(|i| i.tick);
        self.vet_link(node, known, tick, false, Reporter::Peer(sender))
            .is_ok()
    }

    /// A link naming `node` (whose tick here is `known`) at `tick`.
    fn vet_link(
        &self,
        node: &str,
        known: Option<u64>,
        tick: u64,
        head: bool,
        by: Reporter<'_>,
    ) -> Result<(), Forged> {
        let client = matches!(by, Reporter::Client { .. });
        if node == &*self.me {
            let Some(ours) = known else {
                return Ok(()); // not ready: still learning its own tick
            };
            let room = if client { 0 } else { MAX_TICK_LEAP };
            if tick > ours.saturating_add(room) {
                return Err(Forged::OwnTick { tick, ours });
            }
            if client && head {
                return Err(Forged::LiveNode { node: node.into() });
            }
            return Ok(());
        }
        let known = known.unwrap_or(0);
        match by {
            Reporter::Peer(sender) if node == sender => return Ok(()),
            Reporter::Client { live } if live(node) && (head || tick > known) => {
                return Err(Forged::LiveNode { node: node.into() });
            }
            _ => {}
        }
        if tick > known.saturating_add(MAX_TICK_LEAP) {
            return Err(Forged::Leap {
                node: node.into(),
                tick,
                known,
            });
        }
        Ok(())
    }

    /// Raises `node`'s highest tick to at least `tick` (a ping, `info.ticks`).
    pub fn saw_node_tick(&mut self, node: &str, tick: u64) {
        let name = NodeName::from(node);
        self.node_mut(&name).saw_tick(tick);
    }

    /// Every node's highest tick.
    pub fn ticks(&self) -> Vec<(NodeName, u64)> {
        self.nodes
            .iter()
            .filter_map(|(n, i)| i.tick.map(|t| (n.clone(), t)))
            .collect()
    }

    /// Every node's missing ticks.
    pub fn missing(&self) -> NodeSet {
        let mut out = NodeSet::default();
        for (n, i) in &self.nodes {
            let m = i.missing();
            if !m.is_empty() {
                out.0.insert(n.clone(), m);
            }
        }
        out
    }

    /// Another node lacks these ticks: remember to answer.
    pub fn report_missing(&mut self, missing: &NodeSet) {
        for (n, r) in &missing.0 {
            self.node_mut(n).reported.union_with(r);
        }
    }

    /// Another node says these ticks are in no chain any more: those not
    /// present here are superseded, and none needs an answer.
    pub fn learn_known(&mut self, known: &NodeSet) {
        self.learn(known, false);
    }

    /// Another node says these ticks belong to deleted entries.
    pub fn learn_deleted(&mut self, deleted: &NodeSet) {
        self.learn(deleted, true);
    }

    fn learn(&mut self, ticks: &NodeSet, deleted: bool) {
        for (n, r) in &ticks.0 {
            let info = self.node_mut(n);
            if let Some(max) = r.ranges().last().map(|(_, b)| b - 1) {
                info.saw_tick(max);
            }
            info.know(r);
            if deleted {
                info.deleted.union_with(r);
            }
            info.reported.subtract(r);
        }
    }

    /// The ticks of `chain` came by from another node: nobody needs them
    /// answered any more.
    pub fn sighted(&mut self, chain: &Chain) {
        for l in chain.links() {
            if let Some(i) = self.node_info_mut(&l.node) {
                i.reported.remove(l.tick);
            }
        }
    }

    /// Answers reported ticks that this node can answer: up to `max`
    /// entries holding present ones (as events), and which are superseded
    /// or deleted — as ranges, every such tick below the first present one
    /// the budget leaves out. Answered ticks are no longer reported; ticks
    /// this node lacks too stay reported until someone else answers. Of a
    /// node's ticks only those in `only(node)` are answered (`None`: all);
    /// the others stay reported.
    ///
    /// Costs a look-up in the tick pages per answerable tick up to the
    /// first present one left out, and the entries answered: a report of
    /// millions of ticks long superseded (a node back from a partition,
    /// keys rewritten meanwhile) is answered with a few ranges, and no set
    /// is changed tick by tick.
    pub fn answers(&mut self, max: usize, only: impl Fn(&NodeName) -> Option<RangeSet>) -> Answers {
        let mut out = Answers::default();
        let mut budget = max;
        let names: Vec<NodeName> = self.nodes.keys().cloned().collect();
        for name in names {
            let Some(info) = self.nodes.get(&name) else {
                continue;
            };
            if info.reported.is_empty() {
                continue;
            }
            // Only ticks seen here can be answered: never walk a reported
            // range tick by tick beyond what we know (it may be huge).
            let mut answerable = info.reported.intersection(&info.seen);
            if let Some(only) = only(&name) {
                answerable = answerable.intersection(&only);
            }
            if answerable.is_empty() {
                continue;
            }
            // The present ticks, ascending, up to the budget's: a look-up
            // in the tick pages each, no set change per tick.
            let (mut present, mut upto) = (Vec::new(), None);
            'walk: for (a, b) in answerable.ranges() {
                for t in a..b {
                    let Some(id) = info.entries.get(t) else {
                        continue;
                    };
                    if budget == 0 {
                        upto = Some(t);
                        break 'walk;
                    }
                    present.push(t);
                    let e = self.tree.entry(id);
                    if let Some(chain) = e.chain() {
                        out.entries.push(UpdateEvent {
                            path: e.path(),
                            chain: chain.clone(),
                            value: e.data_cloned(),
                            tock: e.tock(),
                        });
                        budget -= 1;
                    }
                }
            }
            let present: RangeSet = present.into_iter().collect();
            let mut done = answerable;
            if let Some(t) = upto {
                done.remove_range(t, u64::MAX);
            }
            // A present tick is answered by its entry, whatever else.
            let rest = done.difference(&present);
            let deleted = rest.intersection(&info.deleted);
            let known = rest.difference(&info.deleted);
            for (set, ticks) in [(&mut out.deleted, deleted), (&mut out.known, known)] {
                if !ticks.is_empty() {
                    set.add(name.clone(), ticks);
                }
            }
            if let Some(i) = self.nodes.get_mut(&name) {
                i.reported.subtract(&done);
            }
        }
        // An entry holds several ticks; send it once.
        let mut sent = std::collections::HashSet::new();
        out.entries.retain(|e| sent.insert(e.path.clone()));
        out
    }

    /// Whether any tick is reported missing by others.
    pub fn has_reported(&self) -> bool {
        self.nodes.values().any(|i| !i.reported.is_empty())
    }

    /// Declares this node's own missing ticks superseded: after a crash it
    /// resumes above every tick it may have handed out, and what nobody
    /// else holds of that gap was never used or is lost with the crash.
    pub fn settle_own_gap(&mut self) -> RangeSet {
        let me = self.me.clone();
        let info = self.node_mut(&me);
        let gap = info.missing();
        info.know(&gap);
        gap
    }

    /// Declares `ticks` of this node's own never used: a node that stopped
    /// uncleanly resumes above its durable tick reservation, and the ticks
    /// between its last logged change and the reservation were never given
    /// to anybody (changes are only broadcast once written to the log). The
    /// ticks become known (superseded) here, and the cluster layer tells the
    /// others ([`State::take_skipped`]).
    pub fn skip_own_ticks(&mut self, ticks: &RangeSet) {
        let me = self.me.clone();
        self.node_mut(&me).know(ticks);
        self.skipped.union_with(ticks);
    }

    /// Own ticks declared never used since the last call (for the cluster
    /// layer to tell the others).
    pub fn take_skipped(&mut self) -> RangeSet {
        std::mem::take(&mut self.skipped)
    }

    /// The ticks of `ticks` that are present here for `node` (in some
    /// entry's chain). Costs the smaller of the two sets' sizes.
    pub fn present_within(&self, node: &str, ticks: &RangeSet) -> RangeSet {
        let Some(info) = self.nodes.get(node) else {
            return RangeSet::new();
        };
        if ticks.count() <= info.entries.len() as u64 {
            ticks.iter().filter(|&t| info.entries.contains(t)).collect()
        } else {
            info.present().intersection(ticks)
        }
    }

    /// Forgets `node` (it left the cluster for good). Refused while it
    /// heads some entry's chain.
    pub fn forget_node(&mut self, node: &str) -> Result<(), &'static str> {
        if *self.me == *node {
            return Err("a node cannot forget itself");
        }
        let Some(info) = self.nodes.get(node) else {
            return Ok(());
        };
        let heads = info.entries.ids().any(|id| {
            self.tree
                .entry(id)
                .chain()
                .is_some_and(|c| &*c.head().node == node)
        });
        if heads {
            return Err("the node still heads some entries");
        }
        if let Some((name, _)) = self.nodes.shift_remove_entry(node) {
            self.recent_nodes.clear();
            self.dropped.push(name);
        }
        Ok(())
    }

    /// The nodes forgotten since the last call (for the cluster layer to
    /// tell the others).
    pub fn take_dropped(&mut self) -> Vec<NodeName> {
        std::mem::take(&mut self.dropped)
    }

    /// Purges deletion tombstones older than `tock`: every node that takes
    /// part in deleting has seen those deletions, so no stale update can
    /// need them any more. A tombstone with children stays. The entries'
    /// ticks stay known (superseded). Returns how many were purged.
    pub fn purge_deleted(&mut self, tock: u64) -> usize {
        let keep = self.tombstones.split_off(&tock);
        let old = std::mem::replace(&mut self.tombstones, keep);
        let mut chains = Vec::new();
        let mut removal = self.tree.bulk_removal();
        for (t, paths) in old {
            for path in paths {
                let Some(e) = removal.follow(&path) else {
                    continue;
                };
                if e.data().is_some() || e.tock() != t || e.has_children() {
                    continue; // rewritten since, or a parent of live data
                }
                let id = e.id();
                if let Some(chain) = removal.remove(id) {
                    chains.push(chain);
                }
            }
        }
        drop(removal);
        for l in chains.iter().flatten().flat_map(|c| c.links()) {
            let n = self.node_mut(&l.node);
            n.supersede(l.tick);
            n.deleted.remove(l.tick);
        }
        chains.len()
    }
}
