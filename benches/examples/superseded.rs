//! What a state record (and a snapshot's node table) asks of each node's
//! bookkeeping: the ticks seen but no longer present
//! (`NodeInfo::superseded`); a state record copies them out under the
//! state's lock (`NodeInfo::ticks_now`) and makes the set after. `KEYS` keys (1 000 000) written in order, then
//! `OVER` (1 200 000) seeded random rewrites, which leave the superseded
//! ticks scattered; then the set is computed `ROUNDS` (5) times.
//!
//! `cargo run --release -p distkv-benches --example superseded`

use std::time::Instant;

use distkv_benches::{env_number, fresh_state};
use distkv_model::{Path, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn main() {
    distkv_benches::heap::tune();
    let (keys, over) = (env_number("KEYS", 1_000_000), env_number("OVER", 1_200_000));
    let paths: Vec<Path> = (0..keys)
        .map(|k| Path::new(vec![Value::str("bench"), Value::uint(k as u64)]))
        .collect();
    let mut st = fresh_state();
    for p in &paths {
        st.local_change(p, Some(Value::uint(1)))
            .expect("a ready state");
    }
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..over {
        let p = &paths[rng.gen_range(0..keys)];
        st.local_change(p, Some(Value::uint(2)))
            .expect("a ready state");
    }
    for _ in 0..env_number("ROUNDS", 5) {
        let t = Instant::now();
        // As a state record takes them: copied out under the lock …
        let taken: Vec<_> = st.nodes().map(|(_, info)| info.ticks_now()).collect();
        let locked = t.elapsed();
        // … and the sets made after it.
        let (mut ranges, mut ticks) = (0, 0);
        for s in taken.iter().map(|t| t.superseded()) {
            ranges += s.ranges().count();
            ticks += s.count();
        }
        println!(
            "{keys} keys, {over} rewrites: superseded {ticks} ticks in {ranges} ranges, \
             {:.1} ms, of which {:.1} ms copying them out",
            t.elapsed().as_secs_f64() * 1e3,
            locked.as_secs_f64() * 1e3
        );
    }
}
