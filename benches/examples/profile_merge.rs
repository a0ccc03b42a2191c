//! Applies 1 M seeded remote events six times, for profilers
//! (`perf record target/release/examples/profile_merge`), by turns one by
//! one and looked ahead of (`Lookahead`); then six times the way a node
//! merges them: `update` messages as the broadcast writes them, each
//! decoded, then its events applied (by turns without and with the
//! look-ahead); then three times as the
//! cluster task takes them (its checks, then the apply); then reads the in-memory
//! event log back the way its readers do (the file writer decodes every
//! record, the broadcaster looks at every record's head).
//!
//! The events change 100 000 keys, or as many as environment variable
//! `KEYS` says.
//!
//! Each figure is given by the wall clock and by the CPU time of the
//! thread (`/proc/thread-self/stat`, in 10 ms ticks): on a busy machine
//! the CPU time is the steadier one.

use std::time::Instant;

use distkv_benches::{apply_run, env_number, fresh_state, remote_events};
use distkv_node::cluster::core::{ClusterConfig, Core};
use distkv_node::cluster::msg::{Update, UpdateEncoder};
use distkv_node::state::State;

const EVENTS: usize = 1_000_000;

fn main() {
    distkv_benches::heap::tune();
    let events = remote_events(EVENTS, env_number("KEYS", 100_000), 3, 42);
    let mut last = None;
    for pass in 0..6 {
        let ahead = pass % 2 == 1;
        let evs = events.clone();
        let (wall, cpu) = (Instant::now(), cpu_secs());
        let mut st = fresh_state();
        apply_run(&mut st, evs, ahead);
        let (wall, cpu) = (wall.elapsed().as_secs_f64(), cpu_secs() - cpu);
        println!(
            "apply{}: {:.0} events/s (wall), {:.0} events/s (cpu)",
            if ahead { ", looked ahead of" } else { "" },
            EVENTS as f64 / wall,
            EVENTS as f64 / cpu
        );
        keep(&mut last, st);
    }
    let msgs = UpdateEncoder::default().encode("node0", events.iter());
    for pass in 0..6 {
        let ahead = pass % 2 == 1;
        let (wall, cpu) = (Instant::now(), cpu_secs());
        let mut decode = 0.0;
        let mut st = fresh_state();
        for m in &msgs {
            let at = cpu_secs();
            let u = Update::decode(m).expect("our own message");
            decode += cpu_secs() - at;
            apply_run(&mut st, u.events, ahead);
        }
        let (wall, cpu) = (wall.elapsed().as_secs_f64(), cpu_secs() - cpu);
        println!(
            "decode {} messages and apply{}: {:.0} events/s (wall), {:.0} events/s (cpu; decoding {:.0} ns/event)",
            msgs.len(),
            if ahead { ", looked ahead of" } else { "" },
            EVENTS as f64 / wall,
            EVENTS as f64 / cpu,
            decode * 1e9 / EVENTS as f64,
        );
        keep(&mut last, st);
    }
    // As the cluster task takes them: the protocol's checks (forged ticks,
    // the node's admission), then the apply.
    let want = last.as_ref().map(State::digest);
    for _ in 0..3 {
        let cpu = cpu_secs();
        let mut st = fresh_state();
        let mut core = Core::new(&st, ClusterConfig::default(), 1, None);
        core.start(&mut st, 0);
        let topic = core.topics().update.clone();
        for m in &msgs {
            core.receive(&mut st, 1, &topic, m);
        }
        let cpu = cpu_secs() - cpu;
        assert_eq!(Some(st.digest()), want, "every event applied");
        println!(
            "the cluster core taking the messages: {:.0} events/s (cpu)",
            EVENTS as f64 / cpu
        );
        keep(&mut last, st);
    }
    if let Some(st) = last {
        read_log(&st);
    }
}

/// Keeps `st` as the last state, the one before it never freed: freeing
/// a state is not what is measured.
fn keep(last: &mut Option<State>, st: State) {
    if let Some(old) = last.replace(st) {
        std::mem::forget(old);
    }
}

/// Reads every record of the log ten times: decoded, and head only.
fn read_log(st: &State) {
    let log = st.log();
    let n = log.len() * 10;
    let cpu = cpu_secs();
    let mut links = 0;
    for _ in 0..10 {
        for (_, e) in log.read(log.oldest_seq(), usize::MAX).into_iter().flatten() {
            links += e.event().chain.len();
        }
    }
    let decode = cpu_secs() - cpu;
    let cpu = cpu_secs();
    let mut mine = 0;
    for _ in 0..10 {
        for (_, e) in log.read(log.oldest_seq(), usize::MAX).into_iter().flatten() {
            mine += usize::from(*e.head_node() == **st.me());
        }
    }
    let head = cpu_secs() - cpu;
    println!(
        "log of {} records: decoding {:.0} ns/record ({links} links), head only {:.0} ns/record ({mine} own)",
        log.len(),
        decode * 1e9 / n as f64,
        head * 1e9 / n as f64,
    );
}

/// CPU time of this thread so far, in seconds (0 where `/proc` says
/// nothing).
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces): utime is the 12th
    // and stime the 13th, in clock ticks of 1/100 s.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    f.iter().sum::<u64>() as f64 / 100.0
}
