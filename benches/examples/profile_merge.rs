//! Applies 1 M seeded remote events three times, for profilers
//! (`perf record target/release/examples/profile_merge`).

use std::time::Instant;

use distkv_benches::{fresh_state, remote_events};

fn main() {
    let events = remote_events(1_000_000, 100_000, 3, 42);
    for _ in 0..3 {
        let evs = events.clone();
        let t = Instant::now();
        let mut st = fresh_state();
        for e in evs {
            st.apply(e);
        }
        let secs = t.elapsed().as_secs_f64();
        println!("{:.0} events/s", 1e6 / secs);
        std::mem::forget(st);
    }
}
