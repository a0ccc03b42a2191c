//! Freeing what a replay replaced on a thread of its own.
//!
//! A replay that overwrites keys in random order frees each old value as it
//! stores the new one, and freeing reads memory nothing has touched since
//! the value was stored (its reference count, the allocator's free list in
//! the block). At a million keys those are cache and TLB misses on the
//! replaying thread, a sixth of a node start (docs/perf.md, "Durable
//! history"). While the node starts, or `distkv-replay` runs, the other
//! cores have nothing to do: [`FreeBehind`] has the state keep the values
//! it replaces ([`State::defer_frees`]) and frees them in batches on a
//! thread of its own.

use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use distkv_model::Packed;

use crate::state::State;

/// Batches on their way to the freeing thread at most; when that many
/// wait, the replay frees the next batch itself.
const QUEUED: usize = 8;

/// A thread freeing the values a state replaced (see the module docs).
#[derive(Debug)]
pub struct FreeBehind {
    to_free: Option<SyncSender<Vec<Packed>>>,
    thread: Option<JoinHandle<()>>,
}

impl FreeBehind {
    /// Starts the thread and has `state` keep what it replaces. Without a
    /// thread (the system refused one), nothing changes: values are freed
    /// as before.
    pub fn start(state: &mut State) -> FreeBehind {
        let (tx, rx) = sync_channel::<Vec<Packed>>(QUEUED);
        let spawned = std::thread::Builder::new()
            .name("distkv-free".into())
            .spawn(move || rx.into_iter().for_each(drop));
        match spawned {
            Ok(thread) => {
                state.defer_frees(true);
                FreeBehind {
                    to_free: Some(tx),
                    thread: Some(thread),
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "no thread to free replaced values on");
                FreeBehind {
                    to_free: None,
                    thread: None,
                }
            }
        }
    }

    /// Hands the thread what `state` replaced, once a batch is full; call
    /// it after every apply.
    #[inline]
    pub fn collect(&self, state: &mut State) {
        if let (Some(tx), Some(batch)) = (&self.to_free, state.take_replaced()) {
            // A full queue or a gone thread: freed here.
            drop(tx.try_send(batch));
        }
    }

    /// Ends the deferral (what `state` still keeps is freed here) and
    /// waits for the thread to free what it was given.
    pub fn finish(mut self, state: &mut State) {
        state.defer_frees(false);
        self.stop();
    }

    fn stop(&mut self) {
        // The channel closed, the thread ends after the batches queued.
        self.to_free = None;
        if let Some(t) = self.thread.take() {
            // Freeing values does not panic; if it did, it is not ours to
            // resume here (the replay's result stands).
            let _ = t.join();
        }
    }
}

impl Drop for FreeBehind {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distkv_log::LogLimits;
    use distkv_model::{path, Chain, UpdateEvent, Value};

    fn set(st: &mut State, key: i64, tick: u64, value: Value) {
        st.replay(UpdateEvent {
            path: path![key],
            chain: Chain::single("a".into(), tick),
            value: Some(value),
            tock: tick,
        });
    }

    #[test]
    fn replaced_values_are_freed_behind_and_the_state_is_the_same() {
        let limits = LogLimits::default();
        let (mut plain, mut deferred) = (State::new("me", limits), State::new("me", limits));
        let behind = FreeBehind::start(&mut deferred);
        // 5 000 keys overwritten four times, with strings (freed behind)
        // and integers (nothing to free).
        let mut tick = 0;
        let mut kept = 0;
        for round in 0..4 {
            for key in 0..5_000 {
                tick += 1;
                let v = if key % 3 == 0 {
                    Value::Int(round)
                } else {
                    Value::str(&format!("{key}/{round}"))
                };
                set(&mut plain, key, tick, v.clone());
                set(&mut deferred, key, tick, v);
                behind.collect(&mut deferred);
                kept = kept.max(deferred.replaced.as_ref().map_or(0, Vec::len));
            }
        }
        assert!(
            kept < crate::state::REPLACED_BATCH,
            "batches were handed over"
        );
        behind.finish(&mut deferred);
        assert!(deferred.replaced.is_none(), "deferral ended");
        assert_eq!(plain.digest(), deferred.digest());
    }

    #[test]
    fn only_short_strings_and_bytes_are_kept_to_free_later() {
        let mut st = State::new("me", LogLimits::default());
        st.defer_frees(true);
        let kept = |st: &State| st.replaced.as_ref().map_or(0, Vec::len);
        let mut tick = 0;
        let mut set_many = |st: &mut State, v: Value| {
            for _ in 0..10 {
                tick += 1;
                set(st, 1, tick, v.clone());
            }
        };
        set_many(&mut st, Value::Int(1));
        set_many(&mut st, Value::str(&"x".repeat(2000)));
        set_many(&mut st, Value::Array(vec![Value::str("a")]));
        assert_eq!(
            kept(&st),
            0,
            "scalars, long strings, containers: freed at once"
        );
        set_many(&mut st, Value::Bin(vec![7; 100].into()));
        assert_eq!(
            kept(&st),
            9,
            "nine short byte strings (the array before them: freed at once)"
        );
    }

    #[test]
    fn without_anyone_collecting_the_kept_values_stay_bounded() {
        let mut st = State::new("me", LogLimits::default());
        st.defer_frees(true);
        for tick in 1..=200_000u64 {
            set(&mut st, 1, tick, Value::str(&tick.to_string()));
        }
        let kept = st.replaced.as_ref().map_or(0, Vec::len);
        assert!((1..=crate::state::REPLACED_MAX).contains(&kept), "{kept}");
        let last = st.entry(&path![1i64]).and_then(|e| e.data_cloned());
        assert_eq!(last, Some(Value::str("200000")));
    }
}
