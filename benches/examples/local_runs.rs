//! A connection's runs of pipelined `set`s as the node makes them under one
//! hold of its state: `KEYS` keys (100 000 by default) of 100-byte values
//! below one parent (`bench.<k>`, as `distkv bench` writes), then 2 M
//! local changes of seeded random keys in runs of `RUN` (16), each new
//! value compared with the one it replaced (the reply's `changed`; making
//! the values, as decoding does, is part of the time), by
//! turns with and without the run's entries asked for first
//! (`Lookahead::group`); `AHEAD=1` or `AHEAD=0` runs one way only (for a
//! profile).
//!
//! `cargo run --release -p distkv-benches --example local_runs` (and with
//! `KEYS=1000000`, `RUN=64`)

use std::time::Instant;

use distkv_benches::{env_number, fresh_state};
use distkv_model::{Path, Value};
use distkv_node::state::Lookahead;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn main() {
    distkv_benches::heap::tune();
    let (keys, run) = (env_number("KEYS", 100_000), env_number("RUN", 16).max(1));
    let changes = 2_000_000 / run * run;
    let paths: Vec<Path> = (0..keys)
        .map(|k| Path::new(vec![Value::str("bench"), Value::uint(k as u64)]))
        .collect();
    // Values are made from a few texts at hand, as a decoder makes them
    // from the bytes it just read.
    let texts: Vec<String> = (0..61).map(|i| format!("{i:0100}")).collect();
    let value = |i: usize| Value::str(&texts[i % texts.len()]);
    let mut st = fresh_state();
    for (k, p) in paths.iter().enumerate() {
        st.local_change(p, Some(value(k))).expect("a ready state");
    }
    let mut rng = StdRng::seed_from_u64(7);
    for pass in 0..8 {
        let ahead = match std::env::var("AHEAD").as_deref() {
            Ok("1") => true,
            Ok("0") => false,
            _ => pass % 2 == 1,
        };
        // Keys drawn before the clock starts; each run's values made just
        // before it, as a connection decodes its run before it takes the
        // state (a value made long before would be cold, as none is).
        let runs: Vec<Vec<usize>> = (0..changes / run)
            .map(|_| (0..run).map(|_| rng.gen_range(0..keys)).collect())
            .collect();
        let mut changed = 0usize;
        let mut hints = Vec::with_capacity(run);
        let mut old = Vec::with_capacity(run);
        let t = Instant::now();
        for (r, keys) in runs.iter().enumerate() {
            let values: Vec<Value> = (0..keys.len()).map(|i| value(r * run + i)).collect();
            hints.clear();
            hints.extend(keys.iter().map(|&k| paths[k].clone()));
            if ahead {
                Lookahead::default().group(&st, &hints);
            }
            for (p, v) in hints.iter().zip(values) {
                let (ev, was) = st.local_replace(p, Some(v)).expect("a ready state");
                changed += usize::from(ev.value.as_ref() != was.as_ref());
                old.push(was);
            }
            // Replies are answered, and old values dropped, after the hold.
            old.clear();
        }
        println!(
            "{keys} keys, runs of {run}, {}: {:.0} ns a change ({changed} changed)",
            if ahead {
                "asked for first"
            } else {
                "one by one"
            },
            t.elapsed().as_secs_f64() * 1e9 / changes as f64
        );
    }
}
