//! The look-ahead of the apply (`distkv_node::state::Lookahead`) where the
//! state is small and hot as well as where it is large: 1 M seeded remote
//! events over `KEYS` keys (1 000 by default) six names deep
//! (`a.b.c.d.e.<k>`, the names shared as a decoded message shares them),
//! applied by turns one by one and looked ahead of; with `FILL=n`, to a
//! state that holds `n` other entries first (a few hot keys in a large
//! state).
//!
//! `cargo run --release -p distkv-benches --example lookahead` (and with
//! `KEYS=10000`, `KEYS=100000`, `FILL=1000000`)

use std::time::Instant;

use distkv_benches::{apply_run, env_number, fresh_state, remote_events};
use distkv_model::{Path, UpdateEvent, Value};

fn main() {
    distkv_benches::heap::tune();
    let (keys, fill) = (env_number("KEYS", 1000), env_number("FILL", 0));
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
        for k in 0..fill {
            let path = Path::new(vec![Value::str("other"), Value::uint(k)]);
            st.local_change(&path, Some(Value::uint(k)))
                .expect("a ready state");
        }
        let t = Instant::now();
        apply_run(&mut st, evs, ahead);
        println!(
            "{keys} keys ({fill} others), {}: {:.0} ns an event",
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
