//! Seeded workloads shared by the criterion benchmarks.

pub mod concurrent;
pub mod heap;

/// The same allocator as the `distkv` binary, so the figures match it
/// (counting live bytes only when a memory example asks).
#[global_allocator]
static GLOBAL: heap::CountingMiMalloc = heap::CountingMiMalloc;

use distkv_log::LogLimits;
use distkv_model::{Chain, NodeName, Path, UpdateEvent, Value};
use distkv_node::state::State;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `n` update events as a cluster of `nodes` servers would broadcast them:
/// each writes random keys among `keys`, building on the chain it last saw
/// for that key, with a Lamport-style tock. Seeded, so every run is equal.
///
/// Each event owns its path, made as it is, and shares its first string
/// (`data`) with the others: what a node's decoder hands the apply
/// (`distkv_model::fast::EventDecoder`). A path shared with every other
/// change of its key would sit wherever the key's first change put it,
/// and reading it would miss the cache as no decoded event does (a third
/// of the apply's time over 1 M keys, docs/perf.md).
pub fn remote_events(n: usize, keys: u64, nodes: usize, seed: u64) -> Vec<UpdateEvent> {
    let mut rng = StdRng::seed_from_u64(seed);
    let names: Vec<NodeName> = (0..nodes)
        .map(|i| NodeName::from(format!("node{i}")))
        .collect();
    let mut ticks = vec![0u64; nodes];
    let mut chains: Vec<Option<Chain>> = vec![None; keys as usize];
    let data = Value::str("data");
    let mut tock = 0u64;
    (0..n)
        .map(|_| {
            let who = rng.gen_range(0..nodes);
            let key = rng.gen_range(0..keys) as usize;
            ticks[who] += 1;
            tock += 2;
            let chain = Chain::attach(names[who].clone(), ticks[who], chains[key].as_ref());
            chains[key] = Some(chain.clone());
            UpdateEvent {
                path: Path::new(vec![
                    data.clone(),
                    Value::uint(key as u64 % 1000),
                    Value::uint(key as u64),
                ]),
                chain,
                value: Some(Value::uint(rng.gen::<u32>() as u64)),
                tock,
            }
        })
        .collect()
}

/// Applies `events` in order: looked ahead of
/// ([`distkv_node::state::Lookahead`]), as a node merges a peer's message,
/// if `ahead`, else one by one.
pub fn apply_run(st: &mut State, events: Vec<UpdateEvent>, ahead: bool) {
    let mut look = ahead.then(distkv_node::state::Lookahead::default);
    let mut events = events.into_iter();
    while let Some(e) = events.next() {
        if let Some(look) = &mut look {
            look.step(st, events.as_slice());
        }
        st.apply(e);
    }
}

/// The number in environment variable `name` (the examples' knobs), or
/// `default` if it is not set to one.
pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A fresh node state that is ready.
pub fn fresh_state() -> State {
    let mut s = State::new("observer", LogLimits::default());
    s.make_ready();
    s
}

/// A seeded cluster history built event by event: `nodes` servers create
/// and change keys `data.<k % 1000>.<k>`, each change building on the
/// key's last chain, with a growing tock. Unlike [`remote_events`] it can
/// go on after a first batch (a base state, then changes on top of it).
pub struct Workload {
    rng: StdRng,
    names: Vec<NodeName>,
    ticks: Vec<u64>,
    chains: Vec<Option<Chain>>,
    tock: u64,
}

/// The path of key `k` in every workload here.
pub fn key_path(k: u64) -> Path {
    Path::new(vec![
        Value::str("data"),
        Value::uint(k % 1000),
        Value::uint(k),
    ])
}

impl Workload {
    /// A history of `nodes` servers, seeded.
    pub fn new(nodes: usize, seed: u64) -> Workload {
        Workload {
            rng: StdRng::seed_from_u64(seed),
            names: (0..nodes)
                .map(|i| NodeName::from(format!("node{i}")))
                .collect(),
            ticks: vec![0; nodes],
            chains: Vec::new(),
            tock: 0,
        }
    }

    /// Keys created so far.
    pub fn keys(&self) -> u64 {
        self.chains.len() as u64
    }

    /// The event setting key `k` (created if new) to `value` (`None`
    /// deletes it), by a random node.
    pub fn change(&mut self, k: u64, value: Option<Value>) -> UpdateEvent {
        let who = self.rng.gen_range(0..self.names.len());
        self.ticks[who] += 1;
        self.tock += 2;
        if k as usize >= self.chains.len() {
            self.chains.resize(k as usize + 1, None);
        }
        let chain = Chain::attach(
            self.names[who].clone(),
            self.ticks[who],
            self.chains[k as usize].as_ref(),
        );
        self.chains[k as usize] = Some(chain.clone());
        UpdateEvent {
            path: key_path(k),
            chain,
            value,
            tock: self.tock,
        }
    }

    /// Creates keys `keys()..keys() + n` with random values, in key order.
    pub fn create(&mut self, n: u64) -> Vec<UpdateEvent> {
        let from = self.keys();
        (from..from + n)
            .map(|k| {
                let v = Value::uint(self.rng.gen::<u32>() as u64);
                self.change(k, Some(v))
            })
            .collect()
    }

    /// `n` changes of random existing keys; one in `delete_every` deletes.
    pub fn churn(&mut self, n: usize, delete_every: u32) -> Vec<UpdateEvent> {
        let keys = self.keys();
        (0..n)
            .map(|_| {
                let k = self.rng.gen_range(0..keys);
                let v = if delete_every > 0 && self.rng.gen_ratio(1, delete_every) {
                    None
                } else {
                    Some(Value::uint(self.rng.gen::<u32>() as u64))
                };
                self.change(k, v)
            })
            .collect()
    }
}

/// A fresh ready state with `events` applied.
pub fn state_of<'a>(events: impl IntoIterator<Item = &'a UpdateEvent>) -> State {
    let mut st = fresh_state();
    for e in events {
        st.apply(e.clone());
    }
    st
}

/// Writes `events` as the event log of node `node` in `dir` (which must hold
/// no segment yet), the first with seq `first_seq`, committing every
/// `group` events, without fsync except at the end.
pub fn write_log(
    dir: &std::path::Path,
    node: &str,
    first_seq: u64,
    events: &[UpdateEvent],
    group: usize,
) -> Result<(), distkv_log::LogError> {
    let mut wc = distkv_log::WriterConfig::new(node);
    wc.fsync = distkv_log::FsyncPolicy::Never;
    wc.first_seq = first_seq;
    let mut w = distkv_log::LogWriter::open(dir, wc, distkv_log::Now::default())?;
    for chunk in events.chunks(group.max(1)) {
        for e in chunk {
            append(&mut w, e)?;
        }
        w.commit(distkv_log::Now::default())?;
    }
    w.close(distkv_log::Now::default())
}

/// Appends `e`, committing the pending group first when it is full.
pub fn append(w: &mut distkv_log::LogWriter, e: &UpdateEvent) -> Result<(), distkv_log::LogError> {
    match w.append_event(0, e) {
        Err(distkv_log::LogError::Full { .. }) => {
            w.commit(distkv_log::Now::default())?;
            w.append_event(0, e).map(drop)
        }
        r => r.map(drop),
    }
}

/// Replays every event of the log in `dir` from `from_seq` on into `st`;
/// returns how many events were read.
pub fn replay_log(
    st: &mut State,
    dir: &std::path::Path,
    from_seq: u64,
) -> Result<u64, distkv_log::LogError> {
    let mut n = 0;
    for rec in distkv_log::LogReader::open(dir, from_seq)? {
        if let distkv_log::LogRecord::Event { event, .. } = rec? {
            // As recovery does: the events are already on disk.
            st.replay(event);
            n += 1;
        }
    }
    Ok(n)
}

/// `st` in DistKV-py's plain save format (what the `save` action writes
/// for a `.dkv` name): a state record, then `{path, depth, value, chain,
/// tock}` per entry with a value, meta tree included.
pub fn py_save(st: &State) -> Vec<u8> {
    let mut w = distkv_node::pyfiles::PyWriter::new();
    let mut out = Vec::new();
    w.state(st, &mut out);
    let mut cursor = distkv_node::state::WalkCursor::default();
    let opts = distkv_node::state::WalkOpts {
        meta: true,
        ..Default::default()
    };
    while !cursor.is_done() {
        cursor.step(st.root(), &opts, usize::MAX, |e, p| w.entry(e, p, &mut out));
    }
    out
}

/// How two snapshots differ.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotDiff {
    /// Entries in both.
    pub common: u64,
    /// Entries in both whose value, chain or tock differ.
    pub changed: u64,
    /// Entries only in the first.
    pub only_a: u64,
    /// Entries only in the second.
    pub only_b: u64,
    /// Node records that differ (or exist in one only).
    pub nodes: u64,
}

/// Compares two snapshots entry by entry, streaming both.
///
/// Both are read in their stored (tree walk) order. Snapshots of trees
/// built in the same order list common paths in the same order, so the
/// walk is a lock-step merge; an entry whose path does not match waits in
/// a map until its partner turns up (new keys, which sit at the end of
/// their parent's children). Memory is proportional to those only.
pub fn diff_snapshots(
    a: &std::path::Path,
    b: &std::path::Path,
) -> Result<SnapshotDiff, distkv_snapshot::SnapshotError> {
    use distkv_snapshot::{EntryRecord, Item, NodeRecord, SnapshotReader};
    use std::collections::HashMap;
    let mut ra = SnapshotReader::open(a)?;
    let mut rb = SnapshotReader::open(b)?;
    let mut d = SnapshotDiff::default();
    let mut nodes_a: HashMap<NodeName, NodeRecord> = HashMap::new();
    let mut nodes_b: HashMap<NodeName, NodeRecord> = HashMap::new();
    let mut wait_a: HashMap<Path, EntryRecord> = HashMap::new();
    let mut wait_b: HashMap<Path, EntryRecord> = HashMap::new();
    let compare = |d: &mut SnapshotDiff, x: &EntryRecord, y: &EntryRecord| {
        d.common += 1;
        if x != y {
            d.changed += 1;
        }
    };
    let (mut ea, mut eb) = (false, false);
    loop {
        let ia = if ea { None } else { ra.next().transpose()? };
        let ib = if eb { None } else { rb.next().transpose()? };
        ea |= ia.is_none();
        eb |= ib.is_none();
        if ea && eb {
            break;
        }
        let (xa, xb) = (
            match ia {
                Some(Item::Node(n)) => {
                    nodes_a.insert(n.name.clone(), n);
                    None
                }
                Some(Item::Entry(e)) => Some(e),
                None => None,
            },
            match ib {
                Some(Item::Node(n)) => {
                    nodes_b.insert(n.name.clone(), n);
                    None
                }
                Some(Item::Entry(e)) => Some(e),
                None => None,
            },
        );
        match (xa, xb) {
            (Some(x), Some(y)) if x.path == y.path => compare(&mut d, &x, &y),
            (xa, xb) => {
                if let Some(x) = xa {
                    match wait_b.remove(&x.path) {
                        Some(y) => compare(&mut d, &x, &y),
                        None => {
                            wait_a.insert(x.path.clone(), x);
                        }
                    }
                }
                if let Some(y) = xb {
                    match wait_a.remove(&y.path) {
                        Some(x) => compare(&mut d, &x, &y),
                        None => {
                            wait_b.insert(y.path.clone(), y);
                        }
                    }
                }
            }
        }
    }
    d.only_a = wait_a.len() as u64;
    d.only_b = wait_b.len() as u64;
    for (n, x) in &nodes_a {
        if nodes_b.get(n) != Some(x) {
            d.nodes += 1;
        }
    }
    d.nodes += nodes_b.keys().filter(|n| !nodes_a.contains_key(*n)).count() as u64;
    Ok(d)
}
