//! Seeded workloads shared by the criterion benchmarks.

use std::sync::Arc;

use distkv_log::LogLimits;
use distkv_model::{Chain, NodeName, Path, UpdateEvent, Value};
use distkv_node::state::State;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `n` update events as a cluster of `nodes` servers would broadcast them:
/// each writes random keys among `keys`, building on the chain it last saw
/// for that key, with a Lamport-style tock. Seeded, so every run is equal.
pub fn remote_events(n: usize, keys: u64, nodes: usize, seed: u64) -> Vec<UpdateEvent> {
    let mut rng = StdRng::seed_from_u64(seed);
    let names: Vec<NodeName> = (0..nodes).map(|i| Arc::from(format!("node{i}"))).collect();
    let mut ticks = vec![0u64; nodes];
    let mut chains: Vec<Option<Chain>> = vec![None; keys as usize];
    let paths: Vec<Path> = (0..keys)
        .map(|k| {
            Path::new(vec![
                Value::str("data"),
                Value::uint(k % 1000),
                Value::uint(k),
            ])
        })
        .collect();
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
                path: paths[key].clone(),
                chain,
                value: Some(Value::uint(rng.gen::<u32>() as u64)),
                tock,
            }
        })
        .collect()
}

/// A fresh node state that is ready.
pub fn fresh_state() -> State {
    let mut s = State::new("observer", LogLimits::default());
    s.make_ready();
    s
}
