//! Keeping the history index current, off the log writer's path.
//!
//! The index (crate `distkv-index`, in `<data dir>/index/`) is derived
//! from the log: nothing the node does depends on it, and nothing it
//! cannot do stops the node. It lives on a thread of its own; the log
//! writer thread holds an [`IndexKeeper`], which remembers the events
//! appended since the last commit (each one's seq, tock and path key, which
//! the writer reads from the in-memory log's record as it encodes it for
//! the file: no event is decoded) and, after each commit, hands the block
//! (segment, offset, CRC, those events) to that thread through a bounded
//! queue with `try_send`.
//! **The writer never waits for the index**: when the queue is full, the
//! block is dropped and the keeper is *behind*; at the next commit it
//! queues a catch-up instead ([`distkv_index::HistoryIndex::sync`], which
//! reads what the index lacks back from the segments), and hands blocks
//! over again once that is queued. Blocks the index already holds are
//! skipped by the index, so nothing is recorded twice.
//!
//! The index thread first opens the index and checks it against the
//! segments (rebuilding a lost one reads the whole log); blocks queued
//! meanwhile wait, and when the queue fills the same catch-up applies.
//! Nothing is fsynced: sled writes its files lazily, and at a clean stop
//! the thread writes what it holds in memory; after a crash the index is
//! checked and caught up at the next start. Any index error is logged and
//! the thread ends (the keeper then drops the index for the rest of the
//! run; the next start repairs it): the history is what must be written,
//! not its index.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use distkv_index::{BlockEvents, HistoryIndex, IndexError};
use distkv_log::{CommitInfo, RemovedSegment, Seq};

/// Blocks the queue to the index thread holds.
pub const QUEUE_BLOCKS: usize = 1024;

/// How long a stop waits for the index thread (its start-up check
/// included) before leaving it behind.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// What the writer hands to the index thread.
enum Msg {
    /// A committed block and its events.
    Block {
        info: CommitInfo,
        next_seq: Seq,
        time_ms: u64,
        events: BlockEvents,
    },
    /// Segments retention deleted.
    Retired(Vec<Seq>),
    /// Blocks were dropped: bring the index up to date from the segments.
    CatchUp,
    /// Write what is in memory and end.
    Close,
}

/// The index thread, as the writer sees it.
struct Worker {
    queue: SyncSender<Msg>,
    thread: JoinHandle<()>,
}

/// Feeds committed blocks to the index thread (see the module docs).
pub struct IndexKeeper {
    /// `None`: no index (switched off, or it failed for this run).
    worker: Option<Worker>,
    /// Events appended and not yet committed, with their log seqs.
    pending: BlockEvents,
    /// Blocks were dropped and no catch-up is queued yet.
    behind: bool,
    /// Times the keeper fell behind (for tests and status).
    fell_behind: u64,
    /// Set by the index thread once its start-up check is done.
    ready: Arc<AtomicBool>,
}

impl std::fmt::Debug for IndexKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexKeeper")
            .field("on", &self.worker.is_some())
            .field("behind", &self.behind)
            .field("ready", &self.is_ready())
            .finish()
    }
}

/// Where the index thread works.
#[derive(Debug, Clone)]
pub struct IndexPlace {
    /// The index directory.
    pub dir: PathBuf,
    /// The log directory.
    pub log_dir: PathBuf,
    /// The node whose log it is.
    pub node: String,
}

impl IndexKeeper {
    /// A keeper that keeps nothing.
    pub fn off() -> IndexKeeper {
        IndexKeeper {
            worker: None,
            pending: BlockEvents::default(),
            behind: false,
            fell_behind: 0,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Starts the index thread for `place` with a queue of
    /// [`QUEUE_BLOCKS`].
    pub fn start(place: IndexPlace) -> IndexKeeper {
        IndexKeeper::start_with(place, QUEUE_BLOCKS, None)
    }

    /// [`IndexKeeper::start`] with a queue of `capacity` blocks; with
    /// `hold`, the thread takes that lock before each message (tests hold
    /// it to fill the queue).
    pub fn start_with(
        place: IndexPlace,
        capacity: usize,
        hold: Option<Arc<Mutex<()>>>,
    ) -> IndexKeeper {
        let (queue, rx) = sync_channel(capacity.max(1));
        let ready = Arc::new(AtomicBool::new(false));
        let ready2 = ready.clone();
        let spawned = std::thread::Builder::new()
            .name("distkv-index".into())
            .spawn(move || run(&place, &rx, &ready2, hold.as_deref()));
        match spawned {
            Ok(thread) => IndexKeeper {
                worker: Some(Worker { queue, thread }),
                pending: BlockEvents::default(),
                behind: false,
                fell_behind: 0,
                ready,
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the history index thread; no index this run");
                IndexKeeper::off()
            }
        }
    }

    /// Whether the index thread has checked the index against the log
    /// and still runs (for tests and status).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && self
                .worker
                .as_ref()
                .is_some_and(|w| !w.thread.is_finished())
    }

    /// How often the queue was full and blocks were dropped (each time
    /// followed by a catch-up from the segments).
    pub fn fell_behind(&self) -> u64 {
        self.fell_behind
    }

    /// Where the log writer notes the events it appends (before they are
    /// committed; see [`IndexKeeper::committed`]); `None` while the index
    /// takes none (off, or behind until its catch-up is queued).
    pub fn events(&mut self) -> Option<&mut BlockEvents> {
        (self.worker.is_some() && !self.behind).then_some(&mut self.pending)
    }

    /// Forgets the events appended since the last commit (the writer
    /// lost them and writes them again).
    pub fn reset(&mut self) {
        self.pending.clear();
    }

    /// Hands over the block a commit wrote (`next_seq`: the writer's next
    /// seq after it; `time_ms`: the time its records carry): the events
    /// noted before `next_seq`. Never waits.
    pub fn committed(&mut self, info: &CommitInfo, next_seq: Seq, time_ms: u64) {
        let events = self.pending.take_before(next_seq);
        if info.records == 0 {
            return;
        }
        if self.behind && self.send(Msg::CatchUp) {
            // The catch-up reads this block too; blocks from the next on
            // are handed over again.
            self.behind = false;
            return;
        }
        if !self.behind {
            // Events appended while the keeper was behind were not noted
            // (the writer notes a batch before committing it in parts): a
            // block goes over with all its events or is read back from the
            // file by a catch-up, never with some missing.
            let want = next_seq.saturating_sub(info.first_seq);
            let whole = events.len() as u64 == want
                && events.first_seq().is_none_or(|s| s == info.first_seq);
            let msg = if whole {
                Msg::Block {
                    info: info.clone(),
                    next_seq,
                    time_ms,
                    events,
                }
            } else {
                Msg::CatchUp
            };
            if !self.send(msg) {
                self.fall_behind();
            }
        }
    }

    /// Hands over the segments retention deleted.
    pub fn retired(&mut self, removed: &[RemovedSegment]) {
        if removed.is_empty() {
            return;
        }
        let gone = removed.iter().map(|r| r.first_seq).collect();
        if !self.behind && !self.send(Msg::Retired(gone)) {
            // The catch-up forgets segments no longer on disk.
            self.fall_behind();
        }
    }

    /// Queues `msg` without waiting; whether it was queued. A thread that
    /// ended (an index error) switches the keeper off.
    fn send(&mut self, msg: Msg) -> bool {
        let Some(w) = &self.worker else {
            return false;
        };
        match w.queue.try_send(msg) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => false,
            Err(TrySendError::Disconnected(_)) => {
                self.worker = None;
                self.pending.clear();
                false
            }
        }
    }

    fn fall_behind(&mut self) {
        if self.worker.is_some() {
            self.behind = true;
            self.fell_behind += 1;
            self.pending.clear();
        }
    }

    /// Stops the index thread after it has handled what is queued and
    /// written what it holds (at a clean stop; not needed for
    /// correctness). A stop during the start-up check waits for it, so
    /// that the index is closed (its lock released) with the node — for
    /// [`CLOSE_WAIT`] at most: a stuck index never holds up the stop.
    pub fn close(&mut self) {
        let Some(w) = self.worker.take() else {
            return;
        };
        if self.behind {
            // Read back what was dropped, while the thread is there.
            let _ = w.queue.send(Msg::CatchUp);
        }
        let _ = w.queue.send(Msg::Close);
        // Bounded: an index stuck in sled must not hold up the node's
        // stop (the thread is left behind; the next start repairs it).
        let deadline = std::time::Instant::now() + CLOSE_WAIT;
        while !w.thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if !w.thread.is_finished() {
            tracing::warn!(
                "the history index thread did not finish in time; it is repaired at the next start"
            );
        } else if w.thread.join().is_err() {
            tracing::warn!("the history index thread panicked; it is repaired at the next start");
        }
        self.pending.clear();
        self.behind = false;
    }
}

impl Drop for IndexKeeper {
    /// Closes the index however the writer thread ends.
    fn drop(&mut self) {
        self.close();
    }
}

/// The index thread: open and check the index, then handle the queue
/// until [`Msg::Close`] or until the writer is gone.
fn run(place: &IndexPlace, rx: &Receiver<Msg>, ready: &AtomicBool, hold: Option<&Mutex<()>>) {
    lower_priority();
    let Some(mut ix) = open_and_sync(&place.dir, &place.log_dir, &place.node) else {
        return;
    };
    ready.store(true, Ordering::Release);
    // Set while the disk is short of space: blocks are skipped, and the
    // first one after space is back is a catch-up from the segments.
    let mut starved = false;
    while let Ok(msg) = rx.recv() {
        let _held = hold.map(|m| m.lock().unwrap_or_else(|e| e.into_inner()));
        if matches!(msg, Msg::Block { .. } | Msg::CatchUp) {
            match (short_of_space(&place.dir), starved) {
                (true, false) => {
                    tracing::warn!(
                        dir = %place.dir.display(),
                        "the disk is nearly full: the history index pauses and leaves the space to the log"
                    );
                    starved = true;
                    continue;
                }
                (true, true) => continue,
                (false, true) => {
                    tracing::info!("disk space is back: the history index catches up with the log");
                    starved = false;
                    if let Err(e) = ix.sync() {
                        fail(&e);
                        return;
                    }
                    continue;
                }
                (false, false) => {}
            }
        }
        let done = match msg {
            Msg::Block {
                info,
                next_seq,
                time_ms,
                events,
            } => ix.record_commit(&info, next_seq, time_ms, &events),
            Msg::Retired(gone) => gone.into_iter().try_for_each(|s| ix.forget(s).map(drop)),
            Msg::CatchUp => ix.sync().map(|r| {
                tracing::debug!(events = r.events, "history index caught up with the log");
            }),
            Msg::Close => break,
        };
        if let Err(e) = done {
            fail(&e);
            return;
        }
    }
    if let Err(e) = ix.flush() {
        tracing::warn!(error = %e, "cannot write the history index; it is caught up at the next start");
    }
}

/// The free space the index leaves to the log: a tenth of the file
/// system, at most this much.
const RESERVE_MAX: u64 = 1 << 30;

/// Whether the file system holding `dir` has less free space than the
/// reserve the index leaves to the log (the index is derived and can be
/// caught up later; the history must be written). `false` when the space
/// cannot be read: the index's own writes then report a full disk.
fn short_of_space(dir: &Path) -> bool {
    space(dir).is_some_and(|(free, total)| below_reserve(free, total))
}

/// Whether `free` of `total` bytes is less than the reserve.
fn below_reserve(free: u64, total: u64) -> bool {
    free < (total / 10).min(RESERVE_MAX)
}

/// Free (for unprivileged writers) and total bytes of the file system
/// holding `dir`.
#[cfg(unix)]
fn space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a NUL-terminated path and `st` points to writable
    // memory of the struct's size; `statvfs` fills it on success.
    let st = unsafe {
        if libc::statvfs(c.as_ptr(), st.as_mut_ptr()) != 0 {
            return None;
        }
        st.assume_init()
    };
    let frsize = st.f_frsize as u64;
    Some((st.f_bavail as u64 * frsize, st.f_blocks as u64 * frsize))
}

#[cfg(not(unix))]
fn space(_dir: &Path) -> Option<(u64, u64)> {
    None
}

/// Makes this thread yield the CPU to the log writer and the server: the
/// index is derived and may lag, the history may not (on a busy machine
/// the writer's lag is what `fsync = interval` can lose in a crash).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `gettid` and `setpriority` take and return plain
        // integers; on Linux, `PRIO_PROCESS` with a thread id sets that
        // thread's nice value.
        let ok = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10)
        };
        if ok != 0 {
            tracing::debug!("cannot lower the history index thread's priority");
        }
    }
}

fn fail(e: &IndexError) {
    tracing::warn!(error = %e, "the history index failed; no index for the rest of this run (it is repaired at the next start)");
}

/// The start-up half: open, throw away what cannot be used, sync.
fn open_and_sync(dir: &Path, log_dir: &Path, node: &str) -> Option<HistoryIndex> {
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use distkv_log::{FsyncPolicy, LogWriter, Now, WriterConfig};
    use distkv_model::{path, Chain, NodeName, UpdateEvent, Value};

    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    /// Writes events `from ..= to` (key `k.<i % 7>`) in blocks of five,
    /// rotating every 40 events, handing each block to `keeper` as the
    /// writer thread does.
    fn write(w: &mut LogWriter, keeper: &mut IndexKeeper, from: u64, to: u64) -> TestResult {
        for i in from..=to {
            let ev = UpdateEvent {
                path: path!["k", i % 7],
                chain: Chain::single(NodeName::from("n1"), i),
                value: Some(Value::uint(i)),
                tock: i,
            };
            let seq = w.append_event(1000 + i, &ev)?;
            if let Some(events) = keeper.events() {
                events.push(seq, ev.tock, &ev.path);
            }
            if i % 5 == 0 {
                let info = w.commit(Now::at(1000 + i))?;
                keeper.committed(&info, w.next_seq(), 1000 + i);
            }
            if i % 40 == 0 {
                w.rotate();
            }
        }
        Ok(())
    }

    fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> TestResult {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            if Instant::now() > deadline {
                return Err(format!("timed out waiting for {what}").into());
            }
            std::thread::yield_now();
        }
        Ok(())
    }

    #[test]
    fn a_full_queue_drops_blocks_then_the_index_catches_up_exactly() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let (log, dir) = (tmp.path().join("log"), tmp.path().join("index"));
        let mut cfg = WriterConfig::new("n1");
        cfg.fsync = FsyncPolicy::Never;
        let mut w = LogWriter::open(&log, cfg, Now::at(1))?;
        let hold = Arc::new(Mutex::new(()));
        let place = IndexPlace {
            dir: dir.clone(),
            log_dir: log.clone(),
            node: "n1".into(),
        };
        let mut keeper = IndexKeeper::start_with(place, 2, Some(hold.clone()));
        wait_until("the start-up check", || keeper.is_ready())?;
        {
            // The index thread is held up: the queue fills, the writer
            // goes on without waiting and the keeper falls behind.
            let _held = hold.lock().map_err(|_| "poisoned")?;
            write(&mut w, &mut keeper, 1, 200)?;
            assert!(keeper.fell_behind() >= 1, "{keeper:?}");
        }
        // Released: the next commit queues the catch-up, then blocks
        // flow again.
        write(&mut w, &mut keeper, 201, 300)?;
        keeper.close();
        w.close(Now::at(5000))?;
        let (mut ix, why) = HistoryIndex::open(&dir, &log, "n1")?;
        assert!(why.is_none());
        let r = ix.sync()?;
        assert!(r.complete(), "{:?}", r.incomplete);
        assert!(
            r.reindexed.is_empty() && r.caught_up.is_empty() && r.events == 0,
            "the index was complete at close: {r:?}"
        );
        for k in 0..7u64 {
            let found = ix.fetch(&ix.lookup(&path!["k", k], false)?)?;
            let seqs: Vec<u64> = found.iter().map(|f| f.seq).collect();
            let want: Vec<u64> = (1..=300).filter(|i| i % 7 == k).collect();
            assert_eq!(seqs, want, "key {k}");
        }
        Ok(())
    }

    /// A keeper whose index thread is the test: it reads what the keeper
    /// hands over from the returned queue.
    fn keeper_and_queue() -> (IndexKeeper, Receiver<Msg>) {
        let (queue, rx) = sync_channel(16);
        let thread = std::thread::spawn(|| {});
        let mut keeper = IndexKeeper::off();
        keeper.worker = Some(Worker { queue, thread });
        (keeper, rx)
    }

    fn block(first_seq: Seq, records: u64) -> CommitInfo {
        CommitInfo {
            records,
            first_seq,
            segment: 1,
            ..CommitInfo::default()
        }
    }

    fn note(keeper: &mut IndexKeeper, seqs: std::ops::Range<Seq>) {
        for seq in seqs {
            if let Some(events) = keeper.events() {
                events.push(seq, seq, &path!["k", seq]);
            }
        }
    }

    /// The writer notes a whole batch of events, then commits it in
    /// parts: events noted while the keeper was behind are missing from
    /// the block after the catch-up, which is then read from the file too,
    /// never handed over without them.
    #[test]
    fn a_block_goes_over_with_all_its_events_or_not_at_all() {
        let (mut keeper, rx) = keeper_and_queue();
        keeper.behind = true;
        note(&mut keeper, 1..7);
        keeper.committed(&block(1, 3), 4, 0);
        assert!(matches!(rx.try_recv(), Ok(Msg::CatchUp)));
        keeper.committed(&block(4, 3), 7, 0);
        assert!(matches!(rx.try_recv(), Ok(Msg::CatchUp)));
        // Noted whole from here on: blocks, each with its own events, the
        // rest kept for the next.
        note(&mut keeper, 7..12);
        keeper.committed(&block(7, 3), 10, 0);
        keeper.committed(&block(10, 3), 12, 0);
        for want in [7..10, 10..12] {
            match rx.try_recv() {
                Ok(Msg::Block { events, .. }) => assert!(events.iter().map(|e| e.0).eq(want)),
                _ => panic!("a block with events {want:?} was not handed over"),
            }
        }
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn the_index_leaves_a_tenth_of_the_disk_and_at_most_a_gibibyte_to_the_log() {
        const G: u64 = 1 << 30;
        assert!(below_reserve(399_999, 4_000_000));
        assert!(!below_reserve(400_000, 4_000_000));
        assert!(below_reserve(G - 1, 1000 * G));
        assert!(!below_reserve(G, 1000 * G));
        assert!(!below_reserve(0, 0));
        let (free, total) = space(Path::new(".")).expect("statvfs of the working directory");
        assert!(free <= total && total > 0, "{free} of {total}");
    }
}
