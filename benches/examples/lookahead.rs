//! The look-ahead of the apply (`distkv_node::state::Lookahead`) where the
//! state is small and hot as well as where it is large: 1 M seeded remote
//! events over `KEYS` keys (1 000 by default) six names deep
//! (`a.b.c.d.e.<k>`, the names shared as a decoded message shares them),
//! applied by turns one by one and looked ahead of.
//!
//! `cargo run --release -p distkv-benches --example lookahead` (and with
//! `KEYS=10000`, `KEYS=100000`)

use std::time::Instant;

use distkv_benches::{apply_ahead, fresh_state, remote_events};
use distkv_model::{Path, UpdateEvent, Value};

fn main() {
    distkv_benches::heap::tune();
    let keys = std::env::var("KEYS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(1000);
    let up: Vec<Value> = ["a", "b", "c", "d", "e"].map(Value::str).into();
    let events: Vec<UpdateEvent> = remote_events(1_000_000, keys, 3, 42)
        .into_iter()
        .map(|mut e| {
            let key = e.path.last().cloned().unwrap_or(Value::Nil);
            e.path = Path::new(up.iter().cloned().chain([key]).collect());
            e
        })
        .collect();
    for pass in 0..6 {
        let ahead = pass % 2 == 1;
        let evs = events.clone();
        let mut st = fresh_state();
        let t = Instant::now();
        match ahead {
            true => apply_ahead(&mut st, evs),
            false => evs.into_iter().for_each(|e| {
                st.apply(e);
            }),
        }
        println!(
            "{keys} keys, {}: {:.0} ns an event",
            if ahead {
                "looked ahead of"
            } else {
                "one by one"
            },
            t.elapsed().as_secs_f64() * 1e3
        );
        // Freeing the state is not what is measured.
        std::mem::forget(st);
    }
}
