//! Keeping the history index current from the log writer thread.
//!
//! The index (crate `distkv-index`, in `<data dir>/index/`) is derived
//! from the log: nothing the node does depends on it, and nothing it
//! cannot do stops the node. [`IndexKeeper`] lives in the writer thread:
//! it remembers the events appended since the last commit and, after each
//! commit, hands the block (segment, offset, CRC, events) to the index in
//! one sled batch — off the clients' path, never fsynced (sled writes its
//! files lazily; after a crash the index is checked and caught up from the
//! segments at the next start).
//!
//! At start the index is opened and checked against the segments
//! ([`distkv_index::HistoryIndex::sync`]) on a thread of its own, since
//! rebuilding a lost index reads the whole log; blocks committed meanwhile
//! are picked up by a second, short sync when the writer takes the index
//! over. Any index error is logged and the index dropped for the rest of
//! the run (the next start repairs it): the history is what must be
//! written, not its index.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use distkv_index::{HistoryIndex, IndexError};
use distkv_log::{CommitInfo, RemovedSegment, Seq};
use distkv_model::UpdateEvent;

/// The index as the writer thread holds it.
enum Phase {
    /// No index (switched off, or it failed for this run).
    Off,
    /// Being opened and checked on its own thread.
    Starting(JoinHandle<Option<HistoryIndex>>),
    /// Current: every committed block is recorded.
    Ready(HistoryIndex),
}

/// Feeds committed blocks to the history index (see the module docs).
pub struct IndexKeeper {
    phase: Phase,
    /// Events appended since the last commit, with their log seqs.
    pending: Vec<(Seq, Arc<UpdateEvent>)>,
}

impl std::fmt::Debug for IndexKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phase = match self.phase {
            Phase::Off => "off",
            Phase::Starting(_) => "starting",
            Phase::Ready(_) => "ready",
        };
        f.debug_struct("IndexKeeper")
            .field("phase", &phase)
            .finish()
    }
}

impl IndexKeeper {
    /// A keeper that keeps nothing.
    pub fn off() -> IndexKeeper {
        IndexKeeper {
            phase: Phase::Off,
            pending: Vec::new(),
        }
    }

    /// Opens and checks the index in `dir` for the log in `log_dir` of
    /// node `node`, on a thread of its own.
    pub fn start(dir: PathBuf, log_dir: PathBuf, node: String) -> IndexKeeper {
        let spawned = std::thread::Builder::new()
            .name("distkv-index-sync".into())
            .spawn(move || open_and_sync(&dir, &log_dir, &node));
        match spawned {
            Ok(h) => IndexKeeper {
                phase: Phase::Starting(h),
                pending: Vec::new(),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the history index thread; no index this run");
                IndexKeeper::off()
            }
        }
    }

    /// Whether the index is current (for tests and status).
    pub fn is_ready(&self) -> bool {
        matches!(self.phase, Phase::Ready(_))
    }

    /// Notes an event the log writer took as `seq`.
    pub fn appended(&mut self, seq: Seq, event: &Arc<UpdateEvent>) {
        if !matches!(self.phase, Phase::Off) {
            self.pending.push((seq, event.clone()));
        }
    }

    /// Forgets the events appended since the last commit (the writer
    /// lost them and writes them again).
    pub fn reset(&mut self) {
        self.pending.clear();
    }

    /// Records the block a commit wrote (`next_seq`: the writer's next
    /// seq after it; `time_ms`: the time its records carry).
    pub fn committed(&mut self, info: &CommitInfo, next_seq: Seq, time_ms: u64) {
        if info.records == 0 {
            return;
        }
        self.take_over_if_started();
        let pending = std::mem::take(&mut self.pending);
        let Phase::Ready(ix) = &mut self.phase else {
            return;
        };
        if let Err(e) = ix.record_commit(info, next_seq, time_ms, &pending) {
            self.fail(&e);
        }
    }

    /// Forgets segments retention deleted.
    pub fn retired(&mut self, removed: &[RemovedSegment]) {
        let Phase::Ready(ix) = &mut self.phase else {
            return;
        };
        let mut res = Ok(());
        for r in removed {
            res = res.and_then(|()| ix.forget(r.first_seq));
        }
        if let Err(e) = res {
            self.fail(&e);
        }
    }

    /// Writes the index's files (at a clean stop; not needed for
    /// correctness).
    pub fn close(&mut self) {
        // A stop while the start-up check still runs waits for it: the
        // index must be closed (its lock released) when the node is.
        if let Phase::Starting(h) = std::mem::replace(&mut self.phase, Phase::Off) {
            if let Ok(Some(ix)) = h.join() {
                self.phase = Phase::Ready(ix);
            }
        }
        if let Phase::Ready(ix) = &self.phase {
            if let Err(e) = ix.flush() {
                tracing::warn!(error = %e, "cannot flush the history index; it is caught up at the next start");
            }
        }
        self.phase = Phase::Off;
    }

    /// Once the start-up sync is done: takes the index over and catches
    /// up with what was written meanwhile.
    fn take_over_if_started(&mut self) {
        let Phase::Starting(h) = &self.phase else {
            return;
        };
        if !h.is_finished() {
            // Pending events are not needed: the sync reads them back.
            self.pending.clear();
            return;
        }
        let Phase::Starting(h) = std::mem::replace(&mut self.phase, Phase::Off) else {
            return;
        };
        self.pending.clear();
        let Ok(Some(mut ix)) = h.join() else {
            return;
        };
        match ix.sync() {
            Ok(_) => self.phase = Phase::Ready(ix),
            Err(e) => self.fail(&e),
        }
    }

    fn fail(&mut self, e: &IndexError) {
        tracing::warn!(error = %e, "the history index failed; no index for the rest of this run (it is repaired at the next start)");
        self.phase = Phase::Off;
        self.pending.clear();
    }
}

impl Drop for IndexKeeper {
    /// Closes the index however the writer thread ends.
    fn drop(&mut self) {
        self.close();
    }
}

/// The start-up half: open, throw away what cannot be used, sync.
fn open_and_sync(
    dir: &std::path::Path,
    log_dir: &std::path::Path,
    node: &str,
) -> Option<HistoryIndex> {
    let (mut ix, why) = match HistoryIndex::open(dir, log_dir, node) {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the history index; no index this run");
            return None;
        }
    };
    if let Some(why) = why {
        tracing::warn!(dir = %dir.display(), reason = %why, "history index unusable; rebuilding it from the log");
    }
    match ix.sync() {
        Ok(r) => {
            tracing::info!(
                reindexed = r.reindexed.len(),
                caught_up = r.caught_up.len(),
                forgotten = r.forgotten.len(),
                events = r.events,
                purged = r.purged,
                "history index checked against the log"
            );
            Some(ix)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot bring the history index up to date; no index this run");
            None
        }
    }
}
