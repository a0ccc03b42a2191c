//! One way in: every change to a node's state passes here.
//!
//! A change reaches the state by one of several [`Road`]s: a client's
//! `set_value`/`delete_value` (and `_internal`), `delete_tree` and
//! `update`, other nodes' events on the bus, a state transfer to a joining
//! node, `-l` files loaded at the start, and `--init`. Whatever the road,
//! the change is taken in a [`Tx`] (the state locked) and passes the same
//! steps, in this order:
//!
//! 1. **Bound:** the node must be able to take it — its history writable
//!    and not too much waiting for the disk ([`Store::admits`]); memory
//!    stays bounded so. A refused change is not applied (other nodes'
//!    events are asked for again later).
//! 2. **Check:** a client's change must be allowed by the ACL its login
//!    bound ([`Access`], checked as DistKV checks it: `x`/`n` on the way,
//!    `w`/`c` for a value, `d` for a subtree); then every [`CommitHook`]
//!    sees each change (a [`Proposal`])
//!    and may refuse it ([`Denied`]); nothing of a refused change is
//!    applied, and the client's request gets the refusal as an error reply.
//! 3. **Apply:** the state's apply rules, with the durable tick reservation
//!    raised when a change of this node needs it.
//! 4. **Announce:** when the transaction ends (the lock released), the log
//!    writer and the watchers are told that the event log grew.
//!
//! Local changes and client `update`s and state transfers go through
//! [`Tx::commit`]. Other nodes' events and loaded files are applied by the
//! pure core (the replication protocol, the file loader) inside a `Tx`;
//! there the core asks [`Store::admission`] — the same steps 1 and 2 — for
//! every event before it applies it.

use std::sync::Arc;

use distkv_core::admit::{Admit, Refused};
use distkv_log::Seq;
use distkv_model::{Path, UpdateEvent, Value};
use std::sync::{
    PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError, TryLockResult,
};
use std::time::{Duration, Instant};
use tokio::sync::watch;

use crate::persist::durable::{with_reserved_ticks, Durability, Refusal, StateHost};
use crate::persist::load::{load_file_admitted, LoadError, LoadReport};
use crate::rules::DataRules;
use crate::state::acl::{Access, AclCursor, AclDenied, Mode, Want};
use crate::state::{meta, Applied, Deleted, State, StateError, Tock};

/// The road a change comes by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Road {
    /// A client's `set_value`, `delete_value` (and their `_internal`
    /// forms) or `delete_tree`.
    Client,
    /// A client's `update`: events restored, e.g. of nodes that are gone.
    Update,
    /// Another node's event on the bus (a broadcast or a repair answer).
    Bus,
    /// The state fetched from a ready peer by a joining node.
    Transfer,
    /// A file loaded before serving (`distkv server -l`).
    Load,
    /// The first value of a new cluster (`distkv server -I`).
    Init,
}

/// A change to commit.
#[derive(Debug, Clone)]
pub enum Change {
    /// A change of this node: sets the value at `path` (`None` deletes).
    Set {
        /// Absolute path.
        path: Path,
        /// The new value; `None` deletes.
        value: Option<Value>,
    },
    /// Deletes every entry with data at or below `path`, each as a change
    /// of this node.
    DeleteTree {
        /// Absolute path.
        path: Path,
    },
    /// Events made elsewhere (with their chains), applied by the merge
    /// rules.
    Events(Vec<UpdateEvent>),
}

/// What a [`CommitHook`] is asked about: one change, or one event of a
/// batch.
#[derive(Debug, Clone, Copy)]
pub enum Proposal<'a> {
    /// A change of this node at `path` (`value: None` deletes).
    Set {
        /// Absolute path.
        path: &'a Path,
        /// The new value.
        value: Option<&'a Value>,
    },
    /// Deleting everything at or below `path`.
    DeleteTree {
        /// Absolute path.
        path: &'a Path,
    },
    /// An event made elsewhere.
    Event(&'a UpdateEvent),
}

/// A check's refusal: the error text the client sees, worded as DistKV
/// words it (a Python exception's repr: `ClientError('…')`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

impl Denied {
    /// A `ClientError` saying `message`.
    pub fn client(message: &str) -> Denied {
        Denied::python("ClientError", &[Value::str(message)])
    }

    /// The Python exception `class` with `args`, as Python's `repr` shows
    /// it: `Class(arg, …)`.
    pub fn python(class: &str, args: &[Value]) -> Denied {
        let args: Vec<String> = args.iter().map(Value::to_string).collect();
        Denied(format!("{class}({})", args.join(", ")))
    }
}

/// The meta tree's fixed rules ([`distkv_core::state::meta`]) for what
/// clients write, directly or by `update`; every node built by
/// [`crate::node::NodeBuilder`] has it. Other nodes' events, transfers and
/// loaded files were checked where they were made.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetaRules;

impl CommitHook for MetaRules {
    fn check(&self, road: Road, proposal: Proposal<'_>, _: &State) -> Result<(), Denied> {
        if !matches!(road, Road::Client | Road::Update) {
            return Ok(());
        }
        let (path, value) = match proposal {
            Proposal::Set { path, value } => (path, value),
            Proposal::Event(ev) => (&ev.path, ev.value.as_ref()),
            Proposal::DeleteTree { .. } => return Ok(()),
        };
        meta::check(path, value).map_err(|e| Denied::python(e.class, &[Value::str(&e.message)]))
    }
}

/// A check every change passes before it is applied (authorisation,
/// access lists, types, codecs).
///
/// Contract: `check` runs with the state locked — it must be quick and
/// must not block or lock the state again. It is asked once per
/// [`Proposal`]; an `Err` refuses that change (a batch of events from a
/// client or a transfer is refused whole, a bus message's events one by
/// one, a file from the refused event on).
pub trait CommitHook: Send + Sync + 'static {
    /// Whether `proposal`, coming by `road`, may be applied to `st`.
    fn check(&self, road: Road, proposal: Proposal<'_>, st: &State) -> Result<(), Denied>;
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The state machine refused it.
    #[error(transparent)]
    State(#[from] StateError),
    /// The history cannot take it: it cannot be written now, or too much
    /// waits for the disk already.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A [`CommitHook`] refused it.
    #[error(transparent)]
    Denied(#[from] Denied),
}

/// What a committed change did.
#[derive(Debug)]
pub enum Committed {
    /// [`Change::Set`]: the event made, and the value the entry had
    /// before.
    Set(Arc<UpdateEvent>, Option<Value>),
    /// [`Change::DeleteTree`]: the deletions made, with the old values.
    DeleteTree(Vec<Deleted>),
    /// [`Change::Events`]: how each event was applied.
    Events(Vec<Applied>),
}

impl Committed {
    /// The event a [`Change::Set`] made.
    pub fn event(self) -> Option<Arc<UpdateEvent>> {
        self.replaced().map(|(ev, _)| ev)
    }

    /// The event a [`Change::Set`] made, and the value it replaced.
    pub fn replaced(self) -> Option<(Arc<UpdateEvent>, Option<Value>)> {
        match self {
            Committed::Set(ev, old) => Some((ev, old)),
            _ => None,
        }
    }

    /// The deletions a [`Change::DeleteTree`] made.
    pub fn deleted(self) -> Vec<Deleted> {
        match self {
            Committed::DeleteTree(d) => d,
            _ => Vec::new(),
        }
    }
}

/// The node's state behind its lock, shared by the commit path and the log
/// writer thread. Readers (`get_value`, walks, replies) hold it shared,
/// side by side; a change holds it alone.
///
/// The standard library's lock, not `parking_lot`'s: a waiter for this
/// busy lock keeps trying for a while ([`SPIN`], about one run of changes)
/// and then sleeps on the futex, where `parking_lot`'s gives up its core
/// with `sched_yield` several times first, which on a machine with as many
/// request threads as cores cost more than it saved (docs/perf.md, "Reads
/// side by side"; the spin: "The state held only for the state's work").
/// It prefers writers: a change waits for the reads under way, not for
/// reads that come after it. As with `parking_lot`'s, a thread that
/// panicked holding it does not lock the others out: poisoning is ignored.
pub struct SharedState(RwLock<State>);

impl SharedState {
    /// Shares `st`.
    pub fn new(st: State) -> Arc<SharedState> {
        Arc::new(SharedState(RwLock::new(st)))
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        match spin(|| self.0.try_read()) {
            Some(g) => g,
            None => self.0.read().unwrap_or_else(PoisonError::into_inner),
        }
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        match spin(|| self.0.try_write()) {
            Some(g) => g,
            None => self.0.write().unwrap_or_else(PoisonError::into_inner),
        }
    }
}

/// How long a thread that finds the state locked keeps trying before it
/// sleeps on the lock: about as long as a connection's run of 16
/// pipelined changes holds it. Sleeping and being woken cost both threads
/// system calls and context switches, more than the wait itself when the
/// holder runs on another core; a holder that is not running (more busy
/// threads than cores) costs a waiter no more than this.
const SPIN: Duration = Duration::from_micros(20);

/// Tries `try_lock` until it succeeds or [`SPIN`] has passed (then
/// `None`: the caller sleeps on the lock).
fn spin<G>(mut try_lock: impl FnMut() -> TryLockResult<G>) -> Option<G> {
    let mut since = None;
    loop {
        for _ in 0..64 {
            match try_lock() {
                Ok(g) => return Some(g),
                Err(TryLockError::Poisoned(e)) => return Some(e.into_inner()),
                Err(TryLockError::WouldBlock) => std::hint::spin_loop(),
            }
        }
        if since.get_or_insert_with(Instant::now).elapsed() >= SPIN {
            return None;
        }
    }
}

impl StateHost for SharedState {
    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.write())
    }

    fn read_state<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.read())
    }

    fn now_ms(&self) -> u64 {
        crate::server::now_ms()
    }
}

/// What every change is checked against: the disk's bound and the hooks.
struct Checks {
    durability: Option<Arc<Durability>>,
    hooks: Vec<Arc<dyn CommitHook>>,
}

impl Checks {
    fn admits(&self, st: &State) -> Result<(), Refusal> {
        match &self.durability {
            Some(d) => d.admits(st.log().pinned()),
            None => Ok(()),
        }
    }

    fn check(&self, road: Road, p: Proposal<'_>, st: &State) -> Result<(), Denied> {
        self.hooks.iter().try_for_each(|h| h.check(road, p, st))
    }
}

/// The commit path's answer to the pure core ([`Admit`]) for one road.
struct RoadAdmit {
    checks: Arc<Checks>,
    road: Road,
}

impl Admit for RoadAdmit {
    fn batch(&self, st: &State) -> Result<(), Refused> {
        self.checks
            .admits(st)
            .map_err(|e| Refused::Later(e.to_string()))
    }

    fn event(&self, st: &State, ev: &UpdateEvent) -> Result<(), Refused> {
        self.checks
            .check(self.road, Proposal::Event(ev), st)
            .map_err(|d| Refused::Denied(d.0))
    }
}

/// A node's state and its one way in.
pub struct Store {
    state: Arc<SharedState>,
    tock: Arc<Tock>,
    changes: watch::Sender<Seq>,
    checks: Arc<Checks>,
    rules: Arc<DataRules>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// The store of `state`, its history kept by `durability` (if the node
    /// has a data directory), every change checked by `hooks` in order.
    pub fn new(
        state: Arc<SharedState>,
        durability: Option<Arc<Durability>>,
        hooks: Vec<Arc<dyn CommitHook>>,
    ) -> Store {
        let (tock, next) = {
            let st = state.read();
            (st.tock().clone(), st.log().next_seq())
        };
        Store {
            state,
            tock,
            changes: watch::channel(next).0,
            checks: Arc::new(Checks { durability, hooks }),
            rules: Arc::default(),
        }
    }

    /// The store with `rules` for conversions (those whose [`TypeRules`]
    /// hook is among the store's hooks).
    ///
    /// [`TypeRules`]: crate::rules::TypeRules
    pub fn with_rules(mut self, rules: Arc<DataRules>) -> Store {
        self.rules = rules;
        self
    }

    /// The data rules: types and codecs, for conversions.
    pub fn rules(&self) -> &DataRules {
        &self.rules
    }

    /// Locks the state for reading. Never hold the guard across an
    /// `.await`. Changes go through [`Store::begin`] / [`Store::commit`].
    pub fn state(&self) -> StateRef<'_> {
        StateRef(self.state.read())
    }

    /// Locks the state for what is not a change: the protocol's and the
    /// node's bookkeeping (readiness, tick reports, dropping a node).
    pub(crate) fn state_mut(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write()
    }

    /// The clock of the node's tocks.
    pub fn tock(&self) -> &Arc<Tock> {
        &self.tock
    }

    /// Locks the state for changes; they are announced when the `Tx` is
    /// dropped.
    pub fn begin(&self) -> Tx<'_> {
        let st = self.state_mut();
        let start = st.log().next_seq();
        Tx {
            store: self,
            st: Some(st),
            start,
        }
    }

    /// Commits one change in a transaction of its own.
    pub fn commit(&self, road: Road, change: Change) -> Result<Committed, ChangeError> {
        self.begin().commit(road, change)
    }

    /// The data directory's writer, if the node has one.
    pub fn durability(&self) -> Option<&Arc<Durability>> {
        self.checks.durability.as_ref()
    }

    /// Whether `st` may take more events, from any road: not while the
    /// history cannot be written, nor while too much waits for the disk.
    pub fn admits(&self, st: &State) -> Result<(), Refusal> {
        self.checks.admits(st)
    }

    /// The commit path's checks for the pure core, which applies the
    /// events of `road` itself (other nodes' events, loaded files).
    pub fn admission(&self, road: Road) -> Arc<dyn Admit + Send + Sync> {
        Arc::new(RoadAdmit {
            checks: self.checks.clone(),
            road,
        })
    }

    /// Sets the root value as the first change of a new cluster (`-I`),
    /// making the node ready.
    pub fn init(&self, value: Value) -> Result<(), ChangeError> {
        let mut tx = self.begin();
        tx.state_mut().make_ready();
        let change = Change::Set {
            path: Path::root(),
            value: Some(value),
        };
        tx.commit(Road::Init, change)?;
        Ok(())
    }

    /// Loads a snapshot, log or DistKV-py file (`-l`); every event passes
    /// the checks ([`Store::admission`]).
    pub fn load_file(&self, file: &std::path::Path) -> Result<LoadReport, LoadError> {
        let admit = self.admission(Road::Load);
        let mut tx = self.begin();
        load_file_admitted(tx.state_mut(), file, &*admit)
    }

    /// A receiver that changes whenever the event log grows.
    pub fn subscribe(&self) -> watch::Receiver<Seq> {
        self.changes.subscribe()
    }

    /// Tells watchers and the file writer that the log grew.
    fn announce(&self, next_seq: Seq) {
        if let Some(d) = self.durability() {
            d.grew(next_seq);
        }
        self.changes.send_if_modified(|s| {
            if *s < next_seq {
                *s = next_seq;
                true
            } else {
                false
            }
        });
    }
}

/// The state locked for reading (see [`Store::state`]).
pub struct StateRef<'a>(RwLockReadGuard<'a, State>);

impl std::ops::Deref for StateRef<'_> {
    type Target = State;

    fn deref(&self) -> &State {
        &self.0
    }
}

/// The state locked for changes. Dropping it releases the lock and, if
/// the event log grew, announces the growth.
pub struct Tx<'a> {
    store: &'a Store,
    st: Option<RwLockWriteGuard<'a, State>>,
    start: Seq,
}

impl Tx<'_> {
    /// The state, for reads (e.g. a request's preconditions).
    pub fn state(&self) -> &State {
        self.st.as_ref().expect("held until drop")
    }

    /// The state for the pure core, which applies events itself after
    /// asking [`Store::admission`]; and for what is not a change.
    pub(crate) fn state_mut(&mut self) -> &mut State {
        self.st.as_mut().expect("held until drop")
    }

    /// Checks, bounds and applies `change` (nothing of it if refused).
    pub fn commit(&mut self, road: Road, change: Change) -> Result<Committed, ChangeError> {
        self.commit_as(road, &Access::Full, change)
    }

    /// [`Tx::commit`] for a client whose login grants `access`: the ACL
    /// must allow the change, and `delete_tree` deletes only what it
    /// allows.
    pub fn commit_as(
        &mut self,
        road: Road,
        access: &Access,
        change: Change,
    ) -> Result<Committed, ChangeError> {
        let checks = &*self.store.checks;
        let st = self.st.as_mut().expect("held until drop");
        checks.admits(st)?;
        if access.is_restricted() {
            let acl = access.cursor(st);
            match &change {
                Change::Set { path, .. } => acl_allows(st, acl, path, Want::WriteOrCreate)?,
                Change::DeleteTree { path } => acl_allows(st, acl, path, Want::Mode(Mode::Delete))?,
                Change::Events(evs) => {
                    for ev in evs {
                        acl_allows(st, acl.clone(), &ev.path, Want::WriteOrCreate)?;
                    }
                }
            }
        }
        match &change {
            Change::Set { path, value } => {
                let value = value.as_ref();
                checks.check(road, Proposal::Set { path, value }, st)?
            }
            Change::DeleteTree { path } => checks.check(road, Proposal::DeleteTree { path }, st)?,
            Change::Events(evs) => {
                for ev in evs {
                    checks.check(road, Proposal::Event(ev), st)?;
                }
            }
        }
        let d = checks.durability.as_ref();
        let local =
            |st: &mut State, f: &mut dyn FnMut(&mut State) -> Result<Committed, StateError>| {
                match with_reserved_ticks(d, st, f) {
                    // The meta file could not take the new reservation (the
                    // writer's log).
                    Err(StateError::TickNotReserved { next }) if d.is_some() => {
                        Err(ChangeError::Refused(Refusal::Storage(format!(
                            "tick {next} cannot be reserved in the node's meta file"
                        ))))
                    }
                    r => r.map_err(ChangeError::State),
                }
            };
        match change {
            Change::Set { path, value } => local(st, &mut |st| {
                st.local_replace(&path, value.clone())
                    .map(|(ev, old)| Committed::Set(ev, old))
            }),
            Change::DeleteTree { path } => local(st, &mut |st| {
                st.delete_tree(&path, access).map(Committed::DeleteTree)
            }),
            Change::Events(evs) => Ok(Committed::Events(
                evs.into_iter().map(|ev| st.apply(ev)).collect(),
            )),
        }
    }
}

/// Whether `acl` allows a change at `path` (`want` at its end): a user
/// bound to an ACL never reaches the meta tree.
fn acl_allows(st: &State, acl: AclCursor<'_>, path: &Path, want: Want) -> Result<(), Denied> {
    if path.iter().any(Value::is_nil) {
        return Err(Denied::python(
            "ValueError",
            &[Value::str("Null path element")],
        ));
    }
    acl.follow(st.root(), path, want)
        .map(drop)
        .map_err(acl_denied)
}

/// DistKV's error for a request an ACL refuses:
/// `ACLError(<AclEntry:[…]@… ='rc'>, 'w')`.
pub fn acl_denied(e: AclDenied) -> Denied {
    Denied(format!("ACLError{e}"))
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        let Some(st) = self.st.take() else { return };
        let next = st.log().next_seq();
        drop(st);
        if next != self.start {
            self.store.announce(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distkv_model::{path, Chain};

    /// The spin takes a free lock at once, gives up on a held one after
    /// [`SPIN`] (the caller then sleeps on it), and takes a poisoned one.
    #[test]
    fn the_spin_takes_free_locks_and_gives_up_on_held_ones() {
        let lock = RwLock::new(1);
        assert!(spin(|| lock.try_write()).is_some());
        let held = lock.write().unwrap();
        let start = Instant::now();
        assert!(spin(|| lock.try_read()).is_none());
        assert!(spin(|| lock.try_write()).is_none());
        assert!(start.elapsed() >= 2 * SPIN);
        drop(held);
        let lock = Arc::new(lock);
        let l = lock.clone();
        let _ = std::thread::spawn(move || {
            let _g = l.write().unwrap();
            panic!("poisons the lock");
        })
        .join();
        assert!(lock.is_poisoned());
        assert_eq!(spin(|| lock.try_read()).map(|g| *g), Some(1));
    }

    /// Refuses every change below `no`.
    struct NotBelowNo;

    impl CommitHook for NotBelowNo {
        fn check(&self, _: Road, p: Proposal<'_>, _: &State) -> Result<(), Denied> {
            let path = match p {
                Proposal::Set { path, .. } | Proposal::DeleteTree { path } => path,
                Proposal::Event(ev) => &ev.path,
            };
            match path.first() {
                Some(v) if *v == Value::str("no") => Err(Denied::client("not below no")),
                _ => Ok(()),
            }
        }
    }

    fn store() -> Store {
        let mut st = State::new("n1", Default::default());
        st.make_ready();
        Store::new(SharedState::new(st), None, vec![Arc::new(NotBelowNo)])
    }

    fn event(node: &str, path: Path) -> UpdateEvent {
        UpdateEvent {
            path,
            chain: Chain::attach(node.into(), 1, None),
            value: Some(Value::Int(1)),
            tock: 1,
        }
    }

    #[test]
    fn a_refused_batch_applies_nothing_and_announces_nothing() {
        let s = store();
        let rx = s.subscribe();
        let evs = vec![event("a", path!["yes"]), event("b", path!["no", "x"])];
        let r = s.commit(Road::Transfer, Change::Events(evs));
        assert!(matches!(r, Err(ChangeError::Denied(_))), "{r:?}");
        assert!(s.state().entry(&path!["yes"]).is_none());
        assert!(!rx.has_changed().unwrap());
    }

    #[test]
    fn a_commit_applies_and_announces_once_the_lock_is_released() -> Result<(), ChangeError> {
        let s = store();
        let mut rx = s.subscribe();
        let change = Change::Set {
            path: path!["k"],
            value: Some(Value::Int(1)),
        };
        let mut tx = s.begin();
        let ev = tx.commit(Road::Client, change)?.event();
        assert_eq!(ev.map(|e| e.path.clone()), Some(path!["k"]));
        assert!(!rx.has_changed().unwrap(), "announced under the lock");
        drop(tx);
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        let no = Change::DeleteTree { path: path!["no"] };
        assert!(matches!(
            s.commit(Road::Client, no),
            Err(ChangeError::Denied(_))
        ));
        assert!(!rx.has_changed().unwrap());
        Ok(())
    }
}
