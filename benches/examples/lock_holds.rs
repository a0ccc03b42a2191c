//! What the node's log writer does while it holds the state: a state
//! record copies each node's ticks out (`NodeInfo::ticks_now`; the sets of
//! superseded ticks are made after the lock is let go), and a snapshot
//! walks and encodes every entry (`persist::snap::write`; the file is
//! finished after). `KEYS` keys (1 000 000) of 100-byte values written in
//! order, then `OVER` (1 200 000) seeded random rewrites, each value made
//! afresh as a request's decoder makes it: the superseded ticks and the
//! values end up scattered. Then each is timed `ROUNDS` (5) times.
//!
//! Last, what the cluster core does with the state locked when a peer back
//! from a partition reports every tick missing: the first answer
//! (`State::answers`, 2 000 entries at most, as the repair's default).
//! With few keys rewritten many times (`KEYS=1000 OVER=2000000`) nearly
//! every tick is long superseded.
//!
//! `cargo run --release -p distkv-benches --example lock_holds`

use std::time::Instant;

use distkv_benches::{env_number, fresh_state};
use distkv_model::{NodeSet, Path, Value};
use distkv_node::persist::snap;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn main() {
    distkv_benches::heap::tune();
    let (keys, over) = (env_number("KEYS", 1_000_000), env_number("OVER", 1_200_000));
    let paths: Vec<Path> = (0..keys)
        .map(|k| Path::new(vec![Value::str("bench"), Value::uint(k as u64)]))
        .collect();
    let value = |i: usize| Value::str(&format!("{i:0100}"));
    let mut st = fresh_state();
    for (k, p) in paths.iter().enumerate() {
        st.local_change(p, Some(value(k))).expect("a ready state");
    }
    let mut rng = StdRng::seed_from_u64(7);
    for i in 0..over {
        let p = &paths[rng.gen_range(0..keys)];
        st.local_change(p, Some(value(i))).expect("a ready state");
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    for round in 0..env_number("ROUNDS", 5) {
        let t = Instant::now();
        let taken: Vec<_> = st.nodes().map(|(_, info)| info.ticks_now()).collect();
        let locked = t.elapsed();
        let (mut ranges, mut ticks) = (0, 0);
        for s in taken.iter().map(|t| t.superseded()) {
            ranges += s.ranges().count();
            ticks += s.count();
        }
        let made = t.elapsed();

        let file = dir.path().join(format!("{round}.dkvsnap"));
        let t = Instant::now();
        let mut done = snap::write(&st, &file, true, 0, 1).expect("a snapshot");
        let walked = t.elapsed();
        done.seal().expect("sealed");
        done.finish().expect("finished");
        println!(
            "{keys} keys, {over} rewrites: state record {:.1} ms held ({:.1} ms in all: \
             {ticks} superseded ticks in {ranges} ranges); snapshot {:.0} ms held",
            locked.as_secs_f64() * 1e3,
            made.as_secs_f64() * 1e3,
            walked.as_secs_f64() * 1e3,
        );
    }
    let me = st.me().clone();
    let tick = st.tick().unwrap_or(0);
    let mut all = NodeSet::default();
    all.0.insert(me, (1..=tick).collect());
    st.report_missing(&all);
    let t = Instant::now();
    let ans = st.answers(2_000, |_| None);
    println!(
        "all {tick} ticks reported missing: the first answer ({} entries, {} ticks known) {:.1} ms held",
        ans.entries.len(),
        ans.known.0.values().map(|r| r.count()).sum::<u64>(),
        t.elapsed().as_secs_f64() * 1e3
    );
}
