//! The node's pure state machine: the entry tree, tick/tock, and the apply
//! rules of DistKV 0.63.3.
//!
//! Nothing here does I/O, reads a clock or spawns a task; the async server
//! wraps a [`State`] in a mutex, and `distkv-replay` drives the very same
//! code offline. Every change that is applied — local or received — goes
//! through [`State::apply`] and is appended to the in-memory [`EventLog`],
//! which is what watchers (and later the file writer and the broadcaster)
//! read.
//!
//! Apply rules (DistKV 0.63.3's, with its non-strict chain comparison):
//! 1. an event whose chain head equals the entry's is a no-op (echo);
//! 2. an event the entry's chain supersedes is stale;
//! 3. if the entry has data and the event does not descend from it, the
//!    higher tock wins (equal tock: the newcomer); the loser's ticks are
//!    recorded as superseded;
//! 4. otherwise the value is stored, the old chain's other links are
//!    superseded, deletions mark their ticks deleted, and the new chain's
//!    ticks become present.
//!
//! Deliberate differences from Python, so that every delivery order ends in
//! the same tree (docs/compat.md): the conflict rule also guards deletion
//! tombstones (Python skips it when the entry has no data), equal tocks are
//! broken by the head's (node, tick) instead of arrival order, and a stale
//! or losing event's ticks are marked superseded instead of staying
//! "missing" forever.

pub mod acl;
mod ahead;
mod digest;
pub mod meta;
mod nodes;
pub mod pattern;
mod sync;
mod tree;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use distkv_log::{EventLog, LogLimits, Seq};
use distkv_model::chain::{precedes, supersedes, MAX_COUNTER};
use distkv_model::{
    Chain, NodeName, NodeSet, Packed, Path, RangeSet, RecentNames, UpdateEvent, Value,
};

pub use ahead::Lookahead;
pub use digest::{hash128, Digest};
pub use nodes::{NodeInfo, TicksNow};
pub use sync::{Answers, Forged, Reporter, MAX_TICK_LEAP};
pub use tree::{ChainRef, Entry, EntryId, Map, Tree, WalkCursor, WalkOpts};

/// The node's Lamport-like counter. Every read advances it, as in DistKV:
/// each reply, event and broadcast consumes a value.
#[derive(Debug, Default)]
pub struct Tock(AtomicU64);

impl Tock {
    /// Advances the tock and returns the new value.
    pub fn next(&self) -> u64 {
        // Saturates instead of wrapping; inputs above `MAX_COUNTER` are
        // refused at decoding, so this is only a last line of defence.
        let prev = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_add(1))
            })
            .unwrap_or(u64::MAX);
        prev.saturating_add(1)
    }

    /// Raises the tock to at least `v`.
    pub fn seen(&self, v: u64) {
        self.0.fetch_max(v, Ordering::Relaxed);
    }

    /// The current value, without advancing it.
    pub fn peek(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Ticks of restored entries, merged into the bookkeeping at the end of a
/// restore ([`State::finish_restore`]): by the node's index in the state's
/// table of nodes (so a link costs no hashing), with the node's name.
#[derive(Debug, Default)]
pub struct SeenBatch(Vec<Option<(NodeName, Vec<u64>)>>);

/// A deletion made by [`State::delete_tree`] and the value it removed.
pub type Deleted = (Arc<UpdateEvent>, Option<Value>);

/// What [`State::apply`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Stored; the log record has this sequence number.
    Stored(Seq),
    /// Stored by [`State::replay`] (no log record).
    Replayed,
    /// The entry already has this event (same chain head).
    Same,
    /// The entry's chain supersedes the event.
    Stale,
    /// Conflict lost on tock.
    Lost,
}

/// Which parts of the bookkeeping `get_state` reports.
#[derive(Debug, Default, Clone, Copy)]
pub struct StateQuery {
    /// `nodes`: `{name: tick}`.
    pub nodes: bool,
    /// `known`: superseded ticks.
    pub known: bool,
    /// `present`: ticks in some chain.
    pub present: bool,
    /// `deleted`: ticks of deleted entries.
    pub deleted: bool,
    /// `missing`: ticks never seen.
    pub missing: bool,
    /// `remote_missing`: ticks others reported missing.
    pub remote_missing: bool,
}

/// A change request that the state refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// This node has no tick yet and cannot originate changes.
    #[error("this node is not ready (it has no tick yet)")]
    NotReady,
    /// This node's tick reached the largest allowed value.
    #[error("this node's tick is exhausted")]
    TickExhausted,
    /// The next tick is beyond the durable reservation: reserve, then retry.
    #[error("tick {next} is not reserved yet")]
    TickNotReserved {
        /// The tick the change needs.
        next: u64,
    },
}

/// The whole replicated state of one node.
#[derive(Debug)]
pub struct State {
    me: NodeName,
    tree: Tree,
    nodes: Map<NodeName, NodeInfo>,
    /// Indices in `nodes` of the names last looked up (cleared when a
    /// node is removed, which moves the indices).
    recent_nodes: RecentNames,
    tock: Arc<Tock>,
    log: EventLog,
    /// Ticks of applied deletions, to be handed to the purge logic.
    pending_deleted: NodeSet,
    applied_count: u64,
    /// Highest own tick that may be used (durable tick reservation).
    tick_limit: Option<u64>,
    /// Nodes forgotten since the cluster layer last asked.
    dropped: Vec<NodeName>,
    /// Own ticks declared never used since the cluster layer last asked.
    skipped: RangeSet,
    /// Deletion tombstones by the tock of their deletion, for purging.
    tombstones: std::collections::BTreeMap<u64, Vec<Path>>,
}

impl State {
    /// A new, empty state for the node `me`.
    pub fn new(me: &str, limits: LogLimits) -> State {
        State::with_log(me, EventLog::new(limits))
    }

    /// A new, empty state whose event log is `log` (e.g. one continuing
    /// after recovered records).
    pub fn with_log(me: &str, log: EventLog) -> State {
        let me = NodeName::from(me);
        let mut nodes = Map::default();
        nodes.insert(me.clone(), NodeInfo::default());
        State {
            me,
            tree: Tree::default(),
            nodes,
            recent_nodes: RecentNames::default(),
            tock: Arc::new(Tock::default()),
            log,
            pending_deleted: NodeSet::default(),
            applied_count: 0,
            tick_limit: None,
            tombstones: Default::default(),
            dropped: Vec::new(),
            skipped: RangeSet::new(),
        }
    }

    /// This node's name.
    pub fn me(&self) -> &NodeName {
        &self.me
    }

    /// The shared tock counter.
    pub fn tock(&self) -> &Arc<Tock> {
        &self.tock
    }

    /// This node's own tick (`None` until it is ready).
    pub fn tick(&self) -> Option<u64> {
        self.nodes.get(&self.me).and_then(|n| n.tick)
    }

    /// The limit of this node's own ticks ([`State::set_tick_limit`]).
    pub fn tick_limit(&self) -> Option<u64> {
        self.tick_limit
    }

    /// Limits this node's own ticks to `limit` (the durable reservation);
    /// `None` = no limit (a node without a data directory).
    pub fn set_tick_limit(&mut self, limit: Option<u64>) {
        self.tick_limit = limit;
    }

    /// Raises this node's own tick to at least `tick` (after a crash: resume
    /// above every tick that might have been handed out).
    pub fn resume_tick_at(&mut self, tick: u64) {
        let me = self.me.clone();
        self.node_mut(&me).saw_tick(tick);
    }

    /// Marks this node ready to originate changes (tick 0 if it has none).
    pub fn make_ready(&mut self) {
        let n = self.node_mut(&self.me.clone());
        if n.tick.is_none() {
            n.tick = Some(0);
        }
    }

    /// The root entry.
    pub fn root(&self) -> Entry<'_> {
        self.tree.root()
    }

    /// The entry at `path`, if it exists.
    pub fn entry(&self, path: &[Value]) -> Option<Entry<'_>> {
        self.tree.root().follow(path)
    }

    /// Creates the entry at `path` (and its ancestors) if missing.
    pub fn ensure_entry(&mut self, path: &[Value]) -> Entry<'_> {
        let id = self.tree.follow_create(path);
        self.tree.entry(id)
    }

    /// The entry holding `node`'s change `tick`, if it is still present.
    pub fn entry_by_tick(&self, node: &str, tick: u64) -> Option<Entry<'_>> {
        let id = self.nodes.get(node)?.entry_id(tick)?;
        let e = self.tree.entry(id);
        // Present ticks name live entries whose chain holds them; checked
        // anyway, as slots are reused.
        let holds = e
            .chain()
            .is_some_and(|c| c.find(node).is_some_and(|l| l.tick == tick));
        holds.then_some(e)
    }

    /// Known nodes in order of first sighting.
    pub fn nodes(&self) -> impl Iterator<Item = (&NodeName, &NodeInfo)> {
        self.nodes.iter()
    }

    /// Each node's first run of ticks seen (present or superseded): the
    /// ticks within it that a state record's set of a node's superseded
    /// ones holds add nothing ([`State::restore_state`] unions them in), so
    /// that a replay's reader may leave them out
    /// (`LogReader::leave_out_known_within`).
    pub fn seen_first_runs(&self) -> Vec<(NodeName, std::ops::Range<u64>)> {
        self.nodes
            .iter()
            .filter_map(|(n, i)| i.seen.ranges().next().map(|(a, b)| (n.clone(), a..b)))
            .collect()
    }

    /// One node's bookkeeping.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name)
    }

    /// The in-memory event log.
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// The in-memory event log, to pin what the file writer still needs.
    pub fn log_mut(&mut self) -> &mut EventLog {
        &mut self.log
    }

    /// Number of events stored so far.
    pub fn applied_count(&self) -> u64 {
        self.applied_count
    }

    /// Ticks of deletions applied since the last call (for purging).
    pub fn take_pending_deleted(&mut self) -> NodeSet {
        std::mem::take(&mut self.pending_deleted)
    }

    fn node_mut(&mut self, name: &NodeName) -> &mut NodeInfo {
        let i = self.node_index(name);
        &mut self.nodes[i]
    }

    /// Node `name`'s bookkeeping, found by its name's address where that
    /// was met lately (see [`State::node_index`]).
    fn node_info(&self, name: &NodeName) -> Option<&NodeInfo> {
        match self.recent_nodes.get(name) {
            Some(i) => self.nodes.get_index(i as usize).map(|(_, n)| n),
            None => self.nodes.get(&**name),
        }
    }

    /// [`State::node_info`], to change.
    fn node_info_mut(&mut self, name: &NodeName) -> Option<&mut NodeInfo> {
        match self.recent_nodes.get(name) {
            Some(i) => self.nodes.get_index_mut(i as usize).map(|(_, n)| n),
            None => self.nodes.get_mut(&**name),
        }
    }

    /// The index of node `name` in `nodes`, which gains it if new.
    fn node_index(&mut self, name: &NodeName) -> usize {
        // The merge asks two or three times per link, with the same names.
        if let Some(i) = self.recent_nodes.get(name) {
            return i as usize;
        }
        // Look up by &str first so the common case does not clone the name.
        let idx = match self.nodes.get_index_of(&**name) {
            Some(i) => i,
            None => self.nodes.insert_full(name.clone(), NodeInfo::default()).0,
        };
        if let Ok(i) = u32::try_from(idx) {
            self.recent_nodes.put(name, i);
        }
        idx
    }

    /// Originates a change at `path`: a new tick of this node, the entry's
    /// chain with this node's old link moved to the head. `value: None`
    /// deletes. Returns the applied event.
    pub fn local_change(
        &mut self,
        path: &Path,
        value: Option<Value>,
    ) -> Result<Arc<UpdateEvent>, StateError> {
        self.local_replace(path, value).map(|(event, _)| event)
    }

    /// [`State::local_change`], also returning the value the entry had
    /// before.
    pub fn local_replace(
        &mut self,
        path: &Path,
        value: Option<Value>,
    ) -> Result<(Arc<UpdateEvent>, Option<Value>), StateError> {
        let me = self.me.clone();
        let limit = self.tick_limit;
        let tick = {
            let n = self.node_mut(&me);
            let t = n
                .tick
                .ok_or(StateError::NotReady)?
                .checked_add(1)
                .filter(|&t| t <= MAX_COUNTER)
                .ok_or(StateError::TickExhausted)?;
            if limit.is_some_and(|l| t > l) {
                return Err(StateError::TickNotReserved { next: t });
            }
            n.tick = Some(t);
            t
        };
        self.tock.next();
        let id = self.tree.follow_create(path);
        let entry = self.tree.entry(id);
        let chain = Chain::attach(me, tick, entry.chain().as_deref());
        let event = UpdateEvent {
            // The names as the tree holds them (`1` where a client said
            // `1.0`): the client's own where they are the same.
            path: if self.tree.followed_as_named(path) {
                path.clone()
            } else {
                entry.path()
            },
            chain,
            value,
            tock: self.tock.next(),
        };
        // The old value is handed out, not cloned: the caller drops it
        // (after letting the state go), not the tree.
        let (outcome, old) = match self.swap_at(id, &event, event.value.clone()) {
            Ok(old) => (
                Applied::Stored(self.log.push(&event)),
                old.map(Packed::into_value),
            ),
            Err(outcome) => (outcome, self.tree.entry(id).data_cloned()),
        };
        debug_assert!(matches!(outcome, Applied::Stored(_)), "{outcome:?}");
        self.tock.next();
        Ok((Arc::new(event), old))
    }

    /// Applies a change from anywhere (a peer, a file, a client `update`).
    pub fn apply(&mut self, event: UpdateEvent) -> Applied {
        self.apply_ref(&event)
    }

    /// Applies an event without recording it in the in-memory event log:
    /// for rebuilding state from files that already hold the event
    /// (recovery, offline replay). Same rules as [`State::apply`].
    pub fn replay(&mut self, mut event: UpdateEvent) -> Applied {
        let value = event.value.take();
        self.replay_with(&event, value)
    }

    /// [`State::replay`] of an event the caller still needs, with `value`
    /// for its value (a clone of it, which shares strings and bytes, or
    /// the value itself, taken out of it).
    pub fn replay_with(&mut self, event: &UpdateEvent, value: Option<Value>) -> Applied {
        match self.merge(event, value) {
            Ok(_) => Applied::Replayed,
            Err(outcome) => outcome,
        }
    }

    /// [`State::replay_with`], handing back the value the entry held
    /// before (`Ok(None)`: none) instead of dropping it: for a replay that
    /// frees it elsewhere (a node's start frees the values on the thread
    /// that decoded them).
    pub fn replay_swap(
        &mut self,
        event: &UpdateEvent,
        value: Option<Value>,
    ) -> Result<Option<Packed>, Applied> {
        self.merge(event, value)
    }

    /// Applies `event` and appends it to the log (which keeps a compact
    /// copy of it).
    fn apply_ref(&mut self, event: &UpdateEvent) -> Applied {
        match self.merge(event, event.value.clone()) {
            Ok(_) => Applied::Stored(self.log.push(event)),
            Err(outcome) => outcome,
        }
    }

    /// The apply rules: stores `value` (the event's value) with the event's
    /// chain and tock and hands back the value the entry held, or says why
    /// not.
    fn merge(
        &mut self,
        event: &UpdateEvent,
        value: Option<Value>,
    ) -> Result<Option<Packed>, Applied> {
        let id = self.tree.follow_create(&event.path);
        self.swap_at(id, event, value)
    }

    /// [`State::merge`] at the entry `id`, the one at the event's path.
    fn swap_at(
        &mut self,
        id: EntryId,
        event: &UpdateEvent,
        value: Option<Value>,
    ) -> Result<Option<Packed>, Applied> {
        self.tock.seen(event.tock);
        for l in event.chain.links() {
            self.node_mut(&l.node).saw_tick(l.tick);
        }
        // The verdict on the entry's chain as the tree holds it (no copy).
        let verdict = {
            let entry = self.tree.entry(id);
            match entry.chain() {
                None => None,
                Some(cur) if cur.same_head(&event.chain) => Some(Applied::Same),
                Some(cur) if supersedes(Some(&*cur), Some(&event.chain)) => Some(Applied::Stale),
                Some(cur)
                    if !precedes(Some(&*cur), Some(&event.chain))
                        && loses(event, entry.tock(), &cur) =>
                {
                    Some(Applied::Lost)
                }
                Some(_) => None,
            }
        };
        if let Some(v) = verdict {
            if v != Applied::Same {
                // The incoming links that are not in the current chain are
                // known now, and not current: superseded.
                let current = self.tree.entry(id).chain_cloned();
                self.drop_links(&event.chain, current.as_ref());
            }
            return Err(v);
        }

        let deleted = value.is_none();
        let entry = self.tree.slot_mut(id);
        let old = std::mem::replace(&mut entry.data, value.map(Packed::new));
        entry.tock = event.tock;
        let current = self.tree.replace_chain(id, Some(event.chain.clone()));

        if let Some(old) = &current {
            self.drop_links(old, Some(&event.chain));
        }
        for l in event.chain.links() {
            // Links the old chain already had are present and mapped here.
            let kept = current
                .as_ref()
                .and_then(|c| c.find(&l.node))
                .is_some_and(|x| x.tick == l.tick);
            let n = self.node_mut(&l.node);
            if deleted {
                n.deleted.insert(l.tick);
            }
            if kept {
                n.reported.remove(l.tick);
            } else {
                n.seen(l.tick, id);
            }
        }
        if deleted {
            for l in event.chain.links() {
                self.pending_deleted.insert(&l.node, l.tick);
            }
            self.tombstones
                .entry(event.tock)
                .or_default()
                .push(event.path.clone());
        }
        self.applied_count += 1;
        Ok(old)
    }

    /// Supersedes every link of `old` that is not identical in `new`.
    fn drop_links(&mut self, old: &Chain, new: Option<&Chain>) {
        for l in old.links() {
            let keep = new
                .and_then(|n| n.find(&l.node))
                .is_some_and(|x| x.tick == l.tick);
            if !keep {
                self.node_mut(&l.node).supersede(l.tick);
            }
        }
    }

    /// Deletes every entry with data at or below `path` (parents first),
    /// each as its own change, as far as `access` allows: with an ACL,
    /// only entries whose `d` it grants, and nothing below a level it may
    /// not enumerate (`e`) or traverse (`x`). (The check of `d` at `path`
    /// itself, which refuses the request, is the caller's.) Returns the
    /// events with the old values.
    pub fn delete_tree(
        &mut self,
        path: &[Value],
        access: &acl::Access,
    ) -> Result<Vec<Deleted>, StateError> {
        let Some(start) = self.tree.root().follow(path) else {
            return Ok(Vec::new());
        };
        let victims = if access.is_restricted() {
            acl::deletable(start, access.cursor(self).follow_to(path))
        } else {
            let mut victims = Vec::new();
            let mut cursor = WalkCursor::default();
            let opts = WalkOpts {
                meta: true,
                ..WalkOpts::default()
            };
            while !cursor.is_done() {
                cursor.step(start, &opts, usize::MAX, |e, rel| {
                    let p = path.iter().chain(rel).cloned().collect();
                    victims.push((Path::new(p), e.data_cloned()));
                });
            }
            victims
        };
        let mut out = Vec::with_capacity(victims.len());
        for (p, old) in victims {
            out.push((self.local_change(&p, None)?, old));
        }
        Ok(out)
    }

    /// `get_state` as a wire map (without `node`/`tock`, which the server adds).
    pub fn report(&self, q: StateQuery) -> Vec<(&'static str, Value)> {
        let mut out = Vec::new();
        let per_node = |f: &dyn Fn(&NodeInfo) -> Option<RangeSet>| -> Value {
            Value::Map(
                self.nodes
                    .iter()
                    .filter_map(|(n, i)| {
                        f(i).filter(|r| !r.is_empty())
                            .map(|r| (Value::Str(n.clone()), r.to_value()))
                    })
                    .collect(),
            )
        };
        if q.nodes {
            let m = self
                .nodes
                .iter()
                .map(|(n, i)| {
                    (
                        Value::Str(n.clone()),
                        i.tick.map_or(Value::Nil, Value::uint),
                    )
                })
                .collect();
            out.push(("nodes", Value::Map(m)));
        }
        if q.known {
            out.push(("known", per_node(&|i| Some(i.superseded()))));
        }
        if q.present {
            out.push(("present", per_node(&|i| Some(i.present()))));
        }
        if q.deleted {
            out.push(("deleted", per_node(&|i| Some(i.deleted.clone()))));
        }
        if q.missing {
            out.push(("missing", per_node(&|i| Some(i.missing()))));
        }
        if q.remote_missing {
            out.push(("remote_missing", per_node(&|i| Some(i.reported.clone()))));
        }
        out
    }

    /// The ticks of `node` that are present (`current`: only where the
    /// node heads the chain), at most `max` (0 = all).
    pub fn enum_node(&self, node: &str, max: usize, current: bool) -> Option<Vec<u64>> {
        let info = self.nodes.get(node)?;
        let ticks = info.present_ticks().into_iter().filter(|t| {
            !current
                || info
                    .entry_id(*t)
                    .and_then(|id| self.tree.entry(id).chain())
                    .is_some_and(|c| &*c.head().node == node)
        });
        Some(if max == 0 {
            ticks.collect()
        } else {
            ticks.take(max).collect()
        })
    }
}

impl State {
    /// Restores one node's bookkeeping from a snapshot or a state record:
    /// raises its tick, adds superseded (`known`) and deleted ticks.
    /// Ticks that are present stay present.
    pub fn restore_node(
        &mut self,
        name: &str,
        tick: Option<u64>,
        known: &RangeSet,
        deleted: &RangeSet,
    ) {
        let name = NodeName::from(name);
        let n = self.node_mut(&name);
        if let Some(t) = tick {
            n.saw_tick(t);
        }
        n.know(known);
        n.deleted.union_with(deleted);
    }

    /// Applies a state record (from a log or a DistKV file): node ticks,
    /// superseded (`known`) and deleted ticks.
    pub fn restore_state<'a>(
        &mut self,
        nodes: impl IntoIterator<Item = (&'a str, Option<u64>)>,
        known: &NodeSet,
        deleted: &NodeSet,
    ) {
        let empty = RangeSet::new();
        for (n, t) in nodes {
            self.restore_node(n, t, &empty, &empty);
        }
        for (n, r) in &known.0 {
            self.restore_node(n, None, r, &empty);
        }
        for (n, r) in &deleted.0 {
            self.restore_node(n, None, &empty, r);
        }
    }

    /// Restores one entry from a snapshot: value, chain and tock as they
    /// were, without a new event. Its chain's ticks become present.
    pub fn restore_entry(
        &mut self,
        path: &[Value],
        value: Option<Value>,
        chain: Option<Chain>,
        tock: u64,
    ) {
        let mut batch = SeenBatch::default();
        self.restore_entry_batched(path, value, chain, tock, &mut batch);
        self.finish_restore(batch);
    }

    /// [`State::restore_entry`] for many entries (a snapshot): the ticks'
    /// bookkeeping is collected in `batch` and merged in one sorted pass by
    /// [`State::finish_restore`], which must follow.
    pub fn restore_entry_batched(
        &mut self,
        path: &[Value],
        value: Option<Value>,
        chain: Option<Chain>,
        tock: u64,
        batch: &mut SeenBatch,
    ) {
        self.tock.seen(tock);
        let id = self.tree.follow_create(path);
        let e = self.tree.slot_mut(id);
        e.data = value.map(Packed::new);
        e.tock = tock;
        let tombstone = e.data.is_none() && chain.is_some();
        self.tree.set_chain(id, chain.clone());
        if tombstone {
            let path = self.tree.entry(id).path();
            self.tombstones.entry(tock).or_default().push(path);
        }
        if let Some(c) = chain {
            for l in c.links() {
                let i = self.node_index(&l.node);
                let n = &mut self.nodes[i];
                n.saw_tick(l.tick);
                n.reported.remove(l.tick);
                n.entries.insert(l.tick, id);
                if batch.0.len() <= i {
                    batch.0.resize_with(i + 1, || None);
                }
                let ticks = batch.0[i].get_or_insert_with(|| (l.node.clone(), Vec::new()));
                ticks.1.push(l.tick);
            }
        }
    }

    /// Starts a restore whose entries come in a snapshot's order (depth
    /// first, parents before children, each subtree whole), which the tree
    /// fills without looking up each new child (see `state::tree`); ends
    /// with [`State::end_in_order_restore`].
    pub(crate) fn begin_in_order_restore(&mut self) {
        self.tree.begin_in_order();
    }

    /// Ends a restore begun by [`State::begin_in_order_restore`]. False if
    /// its entries broke the order (a path came twice, or a subtree in
    /// parts): the state is then only fit to be dropped.
    #[must_use]
    pub(crate) fn end_in_order_restore(&mut self) -> bool {
        self.tree.end_in_order()
    }

    /// Merges the ticks collected by [`State::restore_entry_batched`].
    pub fn finish_restore(&mut self, batch: SeenBatch) {
        for (name, mut ticks) in batch.0.into_iter().flatten() {
            ticks.sort_unstable();
            // By name: the indices may have moved since (a node removed).
            self.node_mut(&name)
                .seen
                .union_with(&ticks.into_iter().collect());
        }
    }

    /// Declares every missing tick of every node superseded: the data this
    /// node has is complete (`distkv server -a`).
    pub fn discard_missing(&mut self) {
        for n in self.nodes.values_mut() {
            let m = n.missing();
            n.know(&m);
        }
    }

    /// Visits every entry that holds a value or a chain, with its path,
    /// depth-first, node before children (`meta`: the meta tree too).
    pub fn for_each_entry<'a>(&'a self, meta: bool, mut f: impl FnMut(Entry<'a>, &[Value])) {
        let mut cursor = WalkCursor::default();
        let opts = WalkOpts {
            empty: true,
            meta,
            ..WalkOpts::default()
        };
        while !cursor.is_done() {
            cursor.step(self.tree.root(), &opts, usize::MAX, |e, path| {
                if e.chain().is_some() || e.data().is_some() {
                    f(e, path);
                }
            });
        }
    }

    /// An order-independent 128-bit digest of the tree (every entry's path,
    /// value, full chain and tock) and of each node's tick. Two states with
    /// the same digest hold the same data, whatever order they got it in.
    pub fn digest(&self) -> u128 {
        let mut d = Digest::new();
        self.for_each_entry(true, |e, path| {
            d.add_entry(path, e.data().as_deref(), e.chain().as_deref(), e.tock())
        });
        for (name, info) in &self.nodes {
            d.add_node(name, info.tick);
        }
        d.value()
    }
}

/// Whether a conflicting `event` loses against the entry's current change
/// (`tock`, `chain`): the higher tock wins, then the higher head node name,
/// then the higher head tick.
fn loses(event: &UpdateEvent, tock: u64, chain: &Chain) -> bool {
    let (e, c) = (event.chain.head(), chain.head());
    (event.tock, &e.node, e.tick) < (tock, &c.node, c.tick)
}

#[cfg(test)]
mod tests;
