//! The history files of a cluster written by many concurrent clients.
//!
//! [`crate::Workload`] makes tidy histories: one change at a time, each
//! node's ticks in order, no conflicts. Real clients do not: with 50
//! connections spread over a few nodes,
//! * a node's ticks interleave across the clients connected to it, and a
//!   client that rewrites one of its recent keys supersedes a tick in the
//!   middle of the present ones, so present and superseded ticks alternate
//!   (fragmented tick sets);
//! * each node applies the others' changes late, in the order of each link
//!   (as an MQTT link keeps it) but interleaved across links, so its log
//!   mixes the nodes' ticks and tocks;
//! * shared keys written on several nodes at once conflict.
//!
//! [`write_cluster`] simulates that with the real state machine on every
//! node (so chains, conflicts and what each node stores are the real ones)
//! and writes each node's data directory as the node would: every event it
//! stored, in order, and a state record every [`ClusterSpec::state_every`]
//! events. Seeded: equal specs give equal files.

use std::collections::VecDeque;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use distkv_log::writer::Now;
use distkv_log::{FsyncPolicy, LogError, LogLimits, LogRecord, LogWriter, WriterConfig};
use distkv_model::{NodeName, NodeSet, Path, UpdateEvent, Value};
use distkv_node::state::{Applied, State};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Nodes (`n0`, `n1`, …), each with a data directory.
    pub nodes: usize,
    /// Clients, spread evenly over the nodes.
    pub writers: usize,
    /// Changes made by all clients together.
    pub writes: usize,
    /// Keys written by clients on every node (conflicts).
    pub hot_keys: u64,
    /// Longest delay of a change on its way to another node, in changes
    /// made meanwhile.
    pub max_delay: usize,
    /// A state record after this many events of a node's log.
    pub state_every: u64,
    /// The RNG seed.
    pub seed: u64,
}

impl ClusterSpec {
    /// `writes` changes by 50 clients on 3 nodes, 100 hot keys, delays of
    /// up to 500 changes, a state record every 10 000 events.
    pub fn fifty_writers(writes: usize, seed: u64) -> ClusterSpec {
        ClusterSpec {
            nodes: 3,
            writers: 50,
            writes,
            hot_keys: 100,
            max_delay: 500,
            state_every: 10_000,
            seed,
        }
    }
}

/// The data directories written.
#[derive(Debug, Clone)]
pub struct ClusterFiles {
    /// One data directory per node.
    pub dirs: Vec<PathBuf>,
    /// Events in all logs together.
    pub events: u64,
    /// A key written by clients of every node.
    pub hot_key: Path,
}

/// A change on its way from one node to another.
struct InFlight {
    due: usize,
    event: Arc<UpdateEvent>,
}

/// One simulated node: its state and its log.
struct Node {
    state: State,
    log: LogWriter,
    logged: u64,
}

impl Node {
    fn record(&mut self, event: &UpdateEvent, now_ms: u64, every: u64) -> Result<(), LogError> {
        let now = Now::at(now_ms);
        crate::append(&mut self.log, event)?;
        self.logged += 1;
        if self.logged % 1000 == 0 {
            self.log.commit(now)?;
        }
        if self.logged % every == 0 {
            // In a group of its own, as the node writes it.
            self.log.commit(now)?;
            self.log
                .append(&state_record(&self.state, self.log.next_seq() - 1, now_ms))?;
            self.log.commit(now)?;
        }
        Ok(())
    }
}

/// A state record of `st` as the node writes it.
fn state_record(st: &State, seq: u64, time_ms: u64) -> LogRecord {
    let mut nodes = Vec::new();
    let mut known = NodeSet::default();
    let mut deleted = NodeSet::default();
    for (n, i) in st.nodes() {
        nodes.push((n.clone(), i.tick()));
        known.0.insert(n.clone(), i.superseded());
        deleted.0.insert(n.clone(), i.deleted().clone());
    }
    LogRecord::State {
        seq,
        time_ms,
        nodes,
        known,
        deleted,
        skipped: Default::default(),
    }
}

/// The path of hot key `h`.
fn hot(h: u64) -> Path {
    Path::new(vec![Value::str("hot"), Value::uint(h)])
}

/// Simulates `spec` and writes each node's data directory `dir/<node>`
/// (see the module docs).
pub fn write_cluster(dir: &FsPath, spec: &ClusterSpec) -> Result<ClusterFiles, LogError> {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let names: Vec<NodeName> = (0..spec.nodes)
        .map(|i| NodeName::from(format!("n{i}")))
        .collect();
    let dirs: Vec<PathBuf> = names.iter().map(|n| dir.join(&**n)).collect();
    let mut nodes = Vec::new();
    for (name, d) in names.iter().zip(&dirs) {
        let io = |source| LogError::Io {
            file: d.clone(),
            source,
        };
        std::fs::create_dir_all(d.join("snap")).map_err(io)?;
        let mut wc = WriterConfig::new(name.clone());
        wc.fsync = FsyncPolicy::Never;
        let mut state = State::new(
            name,
            LogLimits {
                max_records: 1,
                max_bytes: 1,
            },
        );
        state.make_ready();
        nodes.push(Node {
            state,
            log: LogWriter::open(d.join("log"), wc, Now::at(0))?,
            logged: 0,
        });
    }
    // Per client: its next new key and its recent keys.
    let mut next_key = vec![0u64; spec.writers];
    let mut recent: Vec<VecDeque<u64>> = vec![VecDeque::new(); spec.writers];
    // Per link (from, to): changes on their way, in order.
    let mut links: Vec<VecDeque<InFlight>> = (0..spec.nodes * spec.nodes)
        .map(|_| VecDeque::new())
        .collect();
    let value = Value::str("xxxxxxxxxxxxxxxx");
    let epoch = 1_700_000_000_000u64;
    for step in 0..spec.writes {
        let now = epoch + step as u64;
        let w = rng.gen_range(0..spec.writers);
        let home = w % spec.nodes;
        let roll = rng.gen_range(0..100);
        let path = if roll < 10 && spec.hot_keys > 0 {
            hot(rng.gen_range(0..spec.hot_keys))
        } else if roll < 30 && !recent[w].is_empty() {
            let k = recent[w][rng.gen_range(0..recent[w].len())];
            Path::new(vec![Value::str("c"), Value::uint(w as u64), Value::uint(k)])
        } else {
            let k = next_key[w];
            next_key[w] += 1;
            if recent[w].len() == 64 {
                recent[w].pop_front();
            }
            recent[w].push_back(k);
            Path::new(vec![Value::str("c"), Value::uint(w as u64), Value::uint(k)])
        };
        let Ok(event) = nodes[home].state.local_change(&path, Some(value.clone())) else {
            unreachable!("a ready node without a tick limit takes every change");
        };
        nodes[home].record(&event, now, spec.state_every)?;
        for to in (0..spec.nodes).filter(|&t| t != home) {
            let link = &mut links[home * spec.nodes + to];
            // In order on each link: never before the change sent earlier.
            let due =
                (step + rng.gen_range(0..=spec.max_delay)).max(link.back().map_or(0, |f| f.due));
            link.push_back(InFlight {
                due,
                event: event.clone(),
            });
        }
        deliver(&mut nodes, &mut links, spec, Some(step), now)?;
    }
    deliver(
        &mut nodes,
        &mut links,
        spec,
        None,
        epoch + spec.writes as u64,
    )?;
    let mut events = 0;
    for n in nodes {
        events += n.logged;
        n.log.close(Now::at(epoch + spec.writes as u64))?;
    }
    Ok(ClusterFiles {
        dirs,
        events,
        hot_key: hot(0),
    })
}

/// Applies every change due by `step` (all, with `None`) at its
/// destination, logging what the destination stores.
fn deliver(
    nodes: &mut [Node],
    links: &mut [VecDeque<InFlight>],
    spec: &ClusterSpec,
    step: Option<usize>,
    now: u64,
) -> Result<(), LogError> {
    for (i, link) in links.iter_mut().enumerate() {
        let to = &mut nodes[i % spec.nodes];
        while link
            .front()
            .is_some_and(|f| step.is_none_or(|s| f.due <= s))
        {
            let Some(f) = link.pop_front() else { break };
            if let Applied::Stored(_) = to.state.apply((*f.event).clone()) {
                to.record(&f.event, now, spec.state_every)?;
            }
        }
    }
    Ok(())
}
