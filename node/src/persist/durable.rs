//! The node's data directory at run time: a writer thread that keeps the
//! files up to date after recovery ([`distkv_core::persist::recover`],
//! re-exported here).
//!
//! The writer thread follows the in-memory event log (which
//! keeps every record the writer has not taken yet: it is pinned), appends
//! the new events to the segment writer, commits them as one block (group
//! commit) and applies the fsync policy; it then publishes how far the log
//! is durable, which replies wait for under `fsync = always`. Every
//! `state_every` records or seconds it writes a state record (tick
//! bookkeeping), every `snapshot_every` records or seconds a snapshot, after
//! which retention may delete segments the snapshot covers. On shutdown it
//! writes everything, fsyncs, and records a clean stop. After each commit
//! it hands the block to the history index ([`super::index`]), which
//! never holds up or fails the writing of the history itself.
//!
//! **When the history cannot be written** (a full disk, an I/O error) the
//! writer marks it unwritable ([`Durability::failed`]): the server then
//! refuses every change, from clients and from other nodes
//! ([`Durability::admits`], which also bounds the events waiting in
//! memory), and replies waiting for the disk answer with an error. The
//! writer tries again with a growing pause, reopening the log each time,
//! and the node takes changes again once it succeeds. Asked to stop
//! meanwhile, it tries for `stop_retry`, then gives up and logs, as an
//! error, which events were not written.
//!
//! Every interval —
//! state records, snapshots, fsync, segment age — is measured on a
//! monotonic clock ([`StateHost::mono_ms`]); the wall clock only stamps
//! records, headers and snapshots, so a clock stepped back or forth
//! neither stalls nor hurries them.
//!
//! The disk log's positions count state records too, so they differ from
//! the in-memory log's; the writer maps one to the other.

use std::path::Path as FsPath;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use distkv_log::writer::{FsyncPolicy, LogWriter, Now};
use distkv_log::{CommitInfo, EventBatch, LogCopy, LogRecord, RetentionPolicy, Seq};
use distkv_model::{NodeSet, RangeSet};
use distkv_snapshot::{SnapshotError, SnapshotInfo};
use tokio::sync::watch;

use super::index::{IndexKeeper, IndexPlace};
use super::lock::DirLock;
use super::meta::{Meta, MetaError, RESERVE_AHEAD, TICK_BLOCK};
use super::snap;
use crate::state::{State, StateError};
pub use distkv_core::persist::recover::{
    list_snapshots, monotonic_ms, recover, recover_at, remove_stale_temp_files,
    resume_above_reservation, resume_after_loss, snapshot_name, DurableConfig, PersistError,
    Recovered, RecoveredWriter, RecoveryInfo,
};

/// The configuration `settings` ask for, for the directory `dir`.
pub fn durable_config(
    dir: impl Into<std::path::PathBuf>,
    settings: &crate::config::PersistSettings,
) -> DurableConfig {
    use crate::config::FsyncSetting;
    let mut c = DurableConfig::new(dir);
    c.fsync = match settings.fsync {
        FsyncSetting::Always => FsyncPolicy::Always,
        FsyncSetting::Interval(d) => FsyncPolicy::Interval(d),
        FsyncSetting::Never => FsyncPolicy::Never,
    };
    c.recovery = settings.recovery;
    c.stop_retry = settings.stop_retry;
    c.segment_bytes = settings.segment_max_bytes;
    c.segment_age = settings.segment_max_age;
    c.snapshot_records = settings.snapshot_records;
    c.snapshot_interval = settings.snapshot_interval;
    c.history_index = settings.history_index;
    c.retention = RetentionPolicy {
        max_age: Some(settings.retention_max_age),
        max_total_bytes: Some(settings.retention_max_bytes),
    };
    c
}

/// The running side of a data directory, shared with the server.
pub struct Durability {
    config: DurableConfig,
    meta: Mutex<Meta>,
    /// In-memory log position up to which everything is on disk (and, under
    /// `fsync = always`, fsynced).
    durable: watch::Sender<Seq>,
    wake: Mutex<()>,
    wake_cv: Condvar,
    /// Work arrived since the writer last looked.
    pending: AtomicBool,
    /// The writer is (about to be) waiting on `wake_cv`.
    sleeping: AtomicBool,
    /// The writer waits for more changes after writing ([`GROUP_WAIT`]).
    napping: AtomicBool,
    /// In-memory log position up to which the writer has taken records.
    taken: AtomicU64,
    stop: AtomicBool,
    rotate: AtomicBool,
    /// The history cannot be written now (the writer retries), or the
    /// writer gave up: changes are refused.
    stalled: AtomicBool,
    /// Why, while `stalled`.
    trouble: Mutex<Option<String>>,
    /// Fault injection for tests: while set, every write attempt of the
    /// writer fails with this reason (`faulty` says whether it is set, so
    /// a healthy writer takes no lock for it).
    fault: Mutex<Option<String>>,
    faulty: AtomicBool,
    /// A tick reservation made ahead ([`Durability::reserve_ahead`]), for
    /// the state to take up.
    reserved_ahead: AtomicU64,
    /// A reservation ahead is being made (or failed: left to the changes
    /// that run out).
    reserving: AtomicBool,
    /// The directory's lock, held while anything may still write to it.
    _lock: DirLock,
}

impl std::fmt::Debug for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durability")
            .field("dir", &self.config.dir)
            .finish()
    }
}

impl Durability {
    /// The data directory.
    pub fn dir(&self) -> &FsPath {
        &self.config.dir
    }

    /// The fsync policy.
    pub fn fsync(&self) -> FsyncPolicy {
        self.config.fsync
    }

    /// Whether the history cannot be written now: changes are refused
    /// until the writer succeeds again.
    pub fn failed(&self) -> bool {
        self.stalled.load(Ordering::Acquire)
    }

    /// Why the history cannot be written, while [`Durability::failed`].
    pub fn trouble(&self) -> Option<String> {
        if !self.failed() {
            return None;
        }
        let t = self.trouble.lock().unwrap_or_else(|e| e.into_inner());
        Some(t.clone().unwrap_or_else(|| "the log writer stopped".into()))
    }

    /// Whether a state whose in-memory log pins `pinned` (records, bytes)
    /// may take more events: the history must be writable and the backlog
    /// waiting for the disk within its bounds.
    pub fn admits(&self, pinned: (usize, usize)) -> Result<(), Refusal> {
        if let Some(why) = self.trouble() {
            return Err(Refusal::Storage(why));
        }
        let (records, bytes) = pinned;
        if records > self.config.max_backlog || bytes > self.config.max_backlog_bytes {
            return Err(Refusal::Backlog { records, bytes });
        }
        Ok(())
    }

    /// Most events allowed to wait for the disk.
    pub fn max_backlog(&self) -> usize {
        self.config.max_backlog
    }

    /// Fault injection for tests: while `why` is set, every attempt of the
    /// writer to write the history fails with it, as a full disk would
    /// fail it (the writer stalls, retries, and resumes once cleared). As
    /// with a disk, the writer finds out when it next has to write.
    #[doc(hidden)]
    pub fn inject_fault(&self, why: Option<&str>) {
        *self.fault.lock().unwrap_or_else(|e| e.into_inner()) = why.map(str::to_string);
        self.faulty.store(why.is_some(), Ordering::Release);
    }

    fn check_fault(&self) -> Result<(), PersistError> {
        if !self.faulty.load(Ordering::Acquire) {
            return Ok(());
        }
        match &*self.fault.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Ok(()),
            Some(why) => Err(PersistError::Io {
                file: self.config.log_dir(),
                source: std::io::Error::other(why.clone()),
            }),
        }
    }

    /// Marks the history unwritable for `why`; wakes replies waiting for
    /// the disk, which then answer with an error. Returns whether it was
    /// writable before.
    fn stall(&self, why: String) -> bool {
        *self.trouble.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        let was = !self.stalled.swap(true, Ordering::AcqRel);
        self.durable.send_modify(|_| {});
        was
    }

    /// Marks the history writable again; returns whether it was stalled.
    fn unstall(&self) -> bool {
        if !self.stalled.swap(false, Ordering::AcqRel) {
            return false;
        }
        *self.trouble.lock().unwrap_or_else(|e| e.into_inner()) = None;
        true
    }

    /// Wakes the writer: the in-memory log grew.
    ///
    /// Cheap when the writer is busy: only a sleeping writer is signalled
    /// (a notify is a system call, and this runs on every change).
    pub fn wake(&self) {
        self.pending.store(true, Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            // The writer holds `wake` from announcing that it sleeps until
            // it waits, so this notify cannot be lost.
            let _g = self.wake.lock().unwrap_or_else(|e| e.into_inner());
            self.wake_cv.notify_one();
        }
    }

    /// The in-memory log grew up to (not including) `next`: wakes the
    /// writer if it sleeps, or if it waits for more changes and a full
    /// group ([`GROUP_MAX`]) is there — never once per change while it
    /// writes or waits, and no later than a group's worth of changes: a
    /// history that cannot be written is found out before many more
    /// changes are taken.
    pub fn grew(&self, next: Seq) {
        let group = next.saturating_sub(self.taken.load(Ordering::Acquire)) >= GROUP_MAX;
        if group && self.napping.swap(false, Ordering::SeqCst) {
            let _g = self.wake.lock().unwrap_or_else(|e| e.into_inner());
            self.wake_cv.notify_one();
        }
        self.wake();
    }

    /// Waits until the in-memory log is durable up to `seq`; fails with
    /// the reason if the history cannot be written (now: the events may
    /// still be written once the writer succeeds again, or be lost) or the
    /// writer stopped first.
    pub async fn wait_durable(&self, seq: Seq) -> Result<(), String> {
        let mut rx = self.durable.subscribe();
        let res = rx
            .wait_for(|&d| d >= seq || self.failed() || self.stop.load(Ordering::Acquire))
            .await
            .map(|d| *d);
        match res {
            Ok(d) if d >= seq => Ok(()),
            _ => Err(self
                .trouble()
                .unwrap_or_else(|| "the node is stopping".into())),
        }
    }

    /// A receiver of the in-memory log position up to which everything is
    /// on disk (and, under `fsync = always`, fsynced).
    pub fn subscribe(&self) -> watch::Receiver<Seq> {
        self.durable.subscribe()
    }

    /// Raises the durable tick reservation to cover `tick` (fsyncs).
    pub fn reserve_ticks(&self, tick: u64) -> Result<u64, MetaError> {
        let mut m = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        m.reserve(&self.config.dir, tick)
    }

    /// Takes up a reservation made ahead into `st`'s tick limit, and has
    /// the next one made on a thread of its own once fewer than
    /// [`RESERVE_AHEAD`] ticks are left: storing it fsyncs the meta file
    /// and its directory, which a slow disk makes take seconds, and the
    /// changes would wait for it with the state held. Only a change that
    /// finds every reserved tick used waits for a reservation.
    fn reserve_ahead(self: &Arc<Self>, st: &mut State) {
        let Some(mut limit) = st.tick_limit() else {
            return;
        };
        let ahead = self.reserved_ahead.load(Ordering::Acquire);
        if ahead > limit {
            st.set_tick_limit(Some(ahead));
            limit = ahead;
        }
        let tick = st.tick().unwrap_or(0);
        if limit.saturating_sub(tick) >= RESERVE_AHEAD
            || self.reserving.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let d = self.clone();
        let spawned = std::thread::Builder::new()
            .name("distkv-reserve".into())
            .spawn(move || {
                let mut m = d.meta.lock().unwrap_or_else(|e| e.into_inner());
                // At the stop the writer shrinks the reservation to the
                // ticks used: none is made after that.
                if d.stop.load(Ordering::Acquire) {
                    return;
                }
                match m.reserve(&d.config.dir, tick + 2 * RESERVE_AHEAD) {
                    Ok(l) => {
                        d.reserved_ahead.fetch_max(l, Ordering::AcqRel);
                        d.reserving.store(false, Ordering::Release);
                    }
                    Err(e) => tracing::warn!(
                        error = %e,
                        "cannot reserve ticks ahead; the change that needs them tries again"
                    ),
                }
            });
        if spawned.is_err() {
            self.reserving.store(false, Ordering::Release);
        }
    }

    /// Asks the writer to start a new log segment at its next commit.
    pub fn request_rotate(&self) {
        self.rotate.store(true, Ordering::Release);
        self.wake();
    }

    /// Asks the writer to finish: write and fsync everything, then stop.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake();
    }
}

/// Why a change is refused for the sake of the history.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The history cannot be written now.
    #[error("the history cannot be written: {0}; retry later")]
    Storage(String),
    /// Too much waits for the disk already.
    #[error(
        "too many changes are waiting to be written to disk ({records} events, {bytes} bytes); \
         retry later"
    )]
    Backlog {
        /// Events waiting.
        records: usize,
        /// Their approximate bytes.
        bytes: usize,
    },
}

/// Access to the state for the writer thread: lock it, and learn how the
/// clock reads.
pub trait StateHost: Send + Sync + 'static {
    /// Runs `f` with the state locked.
    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R;
    /// Runs `f` with the state locked for reading only (beside other
    /// readers, where the lock allows that).
    fn read_state<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        self.with_state(|st| f(st))
    }
    /// Milliseconds since the Unix epoch: stamps records and files.
    fn now_ms(&self) -> u64;
    /// A monotonic clock in ms: every interval is measured on it.
    fn mono_ms(&self) -> u64 {
        monotonic_ms()
    }
}

/// The writer thread; joining it gives its final result.
pub type WriterThread = std::thread::JoinHandle<Result<(), PersistError>>;

/// Starts the writer thread for a recovered directory. Returns the shared
/// handle and the thread, which ends after [`Durability::request_stop`].
pub fn start<H: StateHost>(
    host: Arc<H>,
    rec_writer: RecoveredWriter,
) -> std::io::Result<(Arc<Durability>, WriterThread)> {
    let RecoveredWriter {
        writer,
        meta,
        config,
        mem_next,
        skipped,
        lock,
    } = rec_writer;
    let d = Arc::new(Durability {
        config,
        meta: Mutex::new(meta),
        durable: watch::channel(mem_next.saturating_sub(1)).0,
        wake: Mutex::new(()),
        wake_cv: Condvar::new(),
        pending: AtomicBool::new(false),
        sleeping: AtomicBool::new(false),
        napping: AtomicBool::new(false),
        taken: AtomicU64::new(mem_next),
        stop: AtomicBool::new(false),
        rotate: AtomicBool::new(false),
        stalled: AtomicBool::new(false),
        trouble: Mutex::new(None),
        fault: Mutex::new(None),
        faulty: AtomicBool::new(false),
        reserved_ahead: AtomicU64::new(0),
        reserving: AtomicBool::new(false),
        _lock: lock,
    });
    let d2 = d.clone();
    let h = std::thread::Builder::new()
        .name("distkv-log-writer".into())
        .spawn(move || {
            let offset = writer.next_seq().wrapping_sub(mem_next);
            let c = &d2.config;
            let index = if c.history_index {
                IndexKeeper::start(IndexPlace {
                    dir: c.index_dir(),
                    log_dir: c.log_dir(),
                    node: writer.config().node.to_string(),
                })
            } else {
                IndexKeeper::off()
            };
            let mut w = WriterLoop {
                host,
                d: d2.clone(),
                writer,
                index,
                batch: EventBatch::default(),
                copy: LogCopy::default(),
                mem_next,
                offset,
                skipped,
                since_state: 0,
                since_snapshot: 0,
                last_state_mono: 0,
                last_snapshot_mono: 0,
                snapshot: None,
            };
            let res = w.run();
            if let Err(e) = &res {
                d2.stall(e.to_string());
                tracing::error!(error = %e, "the log writer stopped; the node refuses changes from now on");
            }
            // Never leave waiters hanging.
            d2.stop.store(true, Ordering::Release);
            d2.durable.send_modify(|_| {});
            res
        })?;
    Ok((d, h))
}

struct WriterLoop<H> {
    host: Arc<H>,
    d: Arc<Durability>,
    writer: LogWriter,
    /// The history index, fed after each commit.
    index: IndexKeeper,
    /// Records taken from the in-memory log, encoded for the file.
    batch: EventBatch,
    /// The records taken, copied out of the in-memory log.
    copy: LogCopy,
    /// Next in-memory log record to write.
    mem_next: Seq,
    /// Disk log position minus in-memory log position (wrapping): the
    /// same for every event, as each is written once.
    offset: Seq,
    /// Own ticks declared never used at this start, for the first state
    /// record.
    skipped: RangeSet,
    since_state: u64,
    since_snapshot: u64,
    /// Monotonic time of the last state record and snapshot.
    last_state_mono: u64,
    last_snapshot_mono: u64,
    /// The snapshot written last, until it is in place.
    snapshot: Option<PendingSnapshot>,
}

/// A snapshot whose items are written, not yet in place. Its file is
/// fsynced on the snapshot writer's thread, the log up to `covered` by the
/// log's; once the log is, a thread of its own waits for the file, renames
/// it into place and fsyncs the directory. The log writer meanwhile goes
/// on writing changes: a slow disk holds back no change.
struct PendingSnapshot {
    /// The disk log position it covers.
    covered: Seq,
    started: Instant,
    /// How long changes waited for it.
    locked: Duration,
    stage: SnapshotStage,
}

enum SnapshotStage {
    /// Waiting for the log's fsync.
    Sealed(Box<snap::SnapshotWriterDone>),
    /// Being put in place.
    Installing(std::thread::JoinHandle<Result<SnapshotInfo, SnapshotError>>),
}

/// Events taken from the in-memory log per lock.
const BATCH: usize = 4096;
/// How long the writer waits after writing before it looks again, unless
/// `fsync = always` (where replies wait for the disk) or [`GROUP_MAX`]
/// changes are waiting first. Changes made meanwhile go out in one block,
/// and the commits do not wake the writer (a system call each): only a
/// writer that found nothing to write sleeps until woken.
const GROUP_WAIT: Duration = Duration::from_millis(2);
/// Changes waiting that end the writer's [`GROUP_WAIT`] early.
const GROUP_MAX: Seq = 256;

/// First pause before the writer tries again to write a history it could
/// not write; it doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(50);
/// Longest pause between two attempts.
const RETRY_MAX: Duration = Duration::from_secs(2);

impl<H: StateHost> WriterLoop<H> {
    /// The time on both clocks.
    fn now(&self) -> Now {
        Now {
            wall_ms: self.host.now_ms(),
            mono_ms: self.host.mono_ms(),
        }
    }

    /// Writes the history until stopped. When writing fails (a full disk,
    /// an I/O error) the history is marked unwritable — changes are
    /// refused, events stay pinned in memory, bounded by the backlog gate
    /// — and the writer tries again with a growing pause, reopening the
    /// log each time (which cuts a partly written block off), until it
    /// succeeds: then changes are accepted again. Asked to stop while it
    /// fails, it keeps trying for `stop_retry`, then gives up and reports
    /// exactly which events were not written.
    fn run(&mut self) -> Result<(), PersistError> {
        let now = self.now();
        self.last_state_mono = now.mono_ms;
        self.last_snapshot_mono = now.mono_ms;
        let mut backoff = RETRY_MIN;
        let mut give_up_at: Option<Instant> = None;
        let mut reopen = false;
        loop {
            let res = if reopen {
                self.reopen().and_then(|()| self.write_history())
            } else {
                self.write_history()
            };
            let err = match res {
                Ok(()) => return Ok(()),
                Err(e @ PersistError::Dropped(_)) => return Err(e),
                Err(e) => e,
            };
            reopen = true;
            if self.d.stall(err.to_string()) {
                tracing::error!(
                    error = %err,
                    "cannot write the history; refusing changes and retrying until it can"
                );
            } else {
                tracing::debug!(error = %err, "writing the history failed again");
            }
            if self.d.stop.load(Ordering::Acquire) {
                let at = *give_up_at.get_or_insert_with(|| {
                    tracing::warn!(
                        retry_for = ?self.d.config.stop_retry,
                        "stopping while the history cannot be written: trying a little longer"
                    );
                    Instant::now() + self.d.config.stop_retry
                });
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    self.report_unwritten(&err);
                    return Err(err);
                }
                std::thread::sleep(backoff.min(left));
            } else {
                self.pause(backoff);
            }
            backoff = (backoff * 2).min(RETRY_MAX);
        }
    }

    /// Opens the log again after a failure: the failed writer may have
    /// left a partial block (cut off now) and lost its pending records,
    /// which are written again from the in-memory log (they stay pinned
    /// there until a commit publishes them).
    fn reopen(&mut self) -> Result<(), PersistError> {
        self.d.check_fault()?;
        self.abandon_snapshot();
        remove_stale_temp_files(&self.d.config.snap_dir())?;
        let wc = self.writer.config().clone();
        // The failed writer's fsync thread may still be at a rotation,
        // which the new writer's opening would otherwise find unfinished.
        self.writer.settle();
        let writer = LogWriter::open(self.d.config.log_dir(), wc, self.now())?;
        let mem_next = writer.next_seq().wrapping_sub(self.offset);
        self.writer = writer;
        self.index.reset();
        self.mem_next = mem_next;
        self.d.taken.store(mem_next, Ordering::Release);
        Ok(())
    }

    /// Waits `d`, or less if asked to stop meanwhile.
    fn pause(&self, d: Duration) {
        let deadline = Instant::now() + d;
        let mut g = self.d.wake.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            // Announced before looking at `stop`: a stop request after the
            // look finds the writer sleeping and notifies it.
            self.d.sleeping.store(true, Ordering::SeqCst);
            let left = deadline.saturating_duration_since(Instant::now());
            if self.d.stop.load(Ordering::SeqCst) || left.is_zero() {
                break;
            }
            g = match self.d.wake_cv.wait_timeout(g, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        self.d.sleeping.store(false, Ordering::SeqCst);
    }

    /// Logs, as an error, the events that never reached the log file
    /// (how many, and which ticks of which node).
    fn report_unwritten(&self, err: &PersistError) {
        let from = self.writer.written_seq().wrapping_sub(self.offset);
        let (count, ticks) = self.host.read_state(|st| {
            let mut by_node: std::collections::BTreeMap<String, RangeSet> = Default::default();
            let mut count = 0u64;
            if let Ok(it) = st.log().read(from, usize::MAX) {
                for (_, ev) in it {
                    count += 1;
                    let ev = ev.event();
                    let head = ev.chain.head();
                    by_node
                        .entry(head.node.to_string())
                        .or_default()
                        .insert(head.tick);
                }
            }
            let ticks: Vec<String> = by_node.iter().map(|(n, r)| format!("{n}: {r}")).collect();
            (count, ticks.join("; "))
        });
        if count == 0 {
            tracing::error!(
                error = %err,
                "stopping with the history unwritable: every event is in the log file, but the \
                 final state record and sync failed"
            );
        } else {
            tracing::error!(
                error = %err,
                events = count,
                %ticks,
                "stopping with the history unwritable: these events were not written; this \
                 node's own changes among them are lost (they were never sent to other nodes), \
                 other nodes' events are fetched back from them"
            );
        }
    }

    /// One healthy run of the writer, until stopped or an error.
    fn write_history(&mut self) -> Result<(), PersistError> {
        self.d.check_fault()?;
        // Events left unwritten by a failure first, then the bookkeeping
        // (which must not claim ticks whose events are not in the log);
        // at the start this records own ticks skipped after an unclean
        // stop at once.
        if self.drain()? > 0 {
            let now = self.now();
            self.commit(now)?;
        }
        self.write_state_record(self.now())?;
        self.publish();
        if self.d.unstall() {
            tracing::info!("the history can be written again; accepting changes");
        }
        loop {
            let stopping = self.d.stop.load(Ordering::Acquire);
            if self.d.rotate.swap(false, Ordering::AcqRel) {
                tracing::info!("log segment rotation requested");
                self.writer.rotate();
            }
            let wrote = self.drain()?;
            let now = self.now();
            if wrote > 0 {
                // Under `fsync = always` the commit itself fsyncs.
                self.commit(now)?;
                self.publish();
            }
            self.writer.sync_if_due(now)?;
            self.housekeeping(now)?;
            if stopping {
                return self.finish();
            }
            if wrote == 0 {
                self.sleep(now);
            } else if !matches!(self.d.fsync(), FsyncPolicy::Always) {
                self.nap();
            }
        }
    }

    /// Commits the pending group and hands the block to the history index.
    fn commit(&mut self, now: Now) -> Result<CommitInfo, PersistError> {
        self.d.check_fault()?;
        let info = self.writer.commit(now)?;
        self.index
            .committed(&info, self.writer.next_seq(), now.wall_ms);
        Ok(info)
    }

    /// Writes every in-memory record not written yet; returns how many.
    fn drain(&mut self) -> Result<u64, PersistError> {
        let host = self.host.clone();
        let mut total = 0;
        loop {
            let now = self.now();
            let n = host
                .read_state(|st| self.copy.fill(st.log(), self.mem_next, BATCH))
                .map_err(PersistError::Dropped)?;
            if n == 0 {
                return Ok(total);
            }
            self.encode_copy(now.wall_ms);
            self.append_taken(now)?;
            total += n as u64;
            self.since_state += n as u64;
            self.since_snapshot += n as u64;
            if n < BATCH {
                return Ok(total);
            }
        }
    }

    /// Encodes the records copied from the in-memory log for the file
    /// (stamped `time_ms`) and notes them for the history index, straight
    /// from the records' bytes (no event is decoded), with the state let
    /// go: changes wait only for the copy. The copy's values are let go
    /// here too.
    fn encode_copy(&mut self, time_ms: u64) {
        self.batch.start(self.writer.next_seq(), time_ms);
        let mut keys = self.index.events();
        for (_, entry) in self.copy.entries() {
            let seq = self.batch.push(&entry);
            if let Some(k) = keys.as_deref_mut() {
                k.push_entry(seq, &entry);
            }
        }
        self.copy.clear();
    }

    /// Appends what [`WriterLoop::encode_copy`] encoded, committing
    /// whenever the group is full, and counts it taken.
    fn append_taken(&mut self, now: Now) -> Result<(), PersistError> {
        let n = self.batch.len();
        let mut done = self.writer.append_batch(&self.batch, 0)?;
        while done < n {
            self.commit(now)?;
            done = self.writer.append_batch(&self.batch, done)?;
        }
        self.mem_next += n as u64;
        self.d.taken.store(self.mem_next, Ordering::Release);
        Ok(())
    }

    /// Tells waiting replies how far the log is on disk, and releases the
    /// in-memory records written.
    fn publish(&self) {
        let upto = self.mem_next - 1;
        let pin = self.mem_next;
        self.host.with_state(|st| st.log_mut().pin(Some(pin)));
        self.d.durable.send_if_modified(|d| {
            let changed = *d < upto;
            *d = upto.max(*d);
            changed
        });
    }

    fn housekeeping(&mut self, now: Now) -> Result<(), PersistError> {
        let d = self.d.clone();
        let c = &d.config;
        let due = |last: u64, every: Duration| {
            now.mono_ms.saturating_sub(last) >= u64::try_from(every.as_millis()).unwrap_or(u64::MAX)
        };
        if self.since_state > 0
            && (self.since_state >= c.state_records || due(self.last_state_mono, c.state_interval))
        {
            self.write_state_record(now)?;
        }
        self.poll_snapshot(false)?;
        if self.snapshot.is_none()
            && self.since_snapshot > 0
            && (self.since_snapshot >= c.snapshot_records
                || due(self.last_snapshot_mono, c.snapshot_interval))
        {
            // Tried again at the next snapshot point if it fails.
            self.since_snapshot = 0;
            self.last_snapshot_mono = now.mono_ms;
            match self.snapshot(now) {
                // The log is fine (an unfinished snapshot file removes
                // itself).
                Err(PersistError::Snapshot(e)) => snapshot_failed(&e),
                r => r?,
            }
        }
        Ok(())
    }

    fn write_state_record(&mut self, now: Now) -> Result<(), PersistError> {
        // The ticks are copied out (a bit per tick) with the state read
        // locked, and the sets of superseded ones made after.
        let (nodes, ticks, deleted) = self.host.read_state(|st| {
            let mut deleted = NodeSet::default();
            let (mut nodes, mut ticks) = (Vec::new(), Vec::new());
            for (n, i) in st.nodes() {
                nodes.push((n.clone(), i.tick()));
                ticks.push((n.clone(), i.ticks_now()));
                deleted.0.insert(n.clone(), i.deleted().clone());
            }
            (nodes, ticks, deleted)
        });
        let known = NodeSet(
            ticks
                .into_iter()
                .map(|(n, t)| (n, t.superseded()))
                .collect(),
        );
        // A state record carries the position of the last event before it.
        let seq = self.writer.next_seq() - 1;
        self.writer.append(&LogRecord::State {
            seq,
            time_ms: now.wall_ms,
            nodes,
            known,
            deleted,
            skipped: self.skipped.clone(),
        })?;
        self.commit(now)?;
        // Kept until written: a failed attempt writes them again.
        self.skipped = RangeSet::new();
        self.since_state = 0;
        self.last_state_mono = now.mono_ms;
        Ok(())
    }

    /// Writes a snapshot at the current log position, to be put in place by
    /// [`WriterLoop::poll_snapshot`].
    fn snapshot(&mut self, now: Now) -> Result<(), PersistError> {
        // Its commit would fail: not the whole snapshot before it.
        self.d.check_fault()?;
        let dir = self.d.config.snap_dir();
        // Under the lock: write what is pending, then the state as of that
        // position, so the snapshot covers exactly up to `covered`. Shared:
        // changes wait, reads go on (unless a change waits too).
        let host = self.host.clone();
        let started = Instant::now();
        let res = host.read_state(|st| -> Result<_, PersistError> {
            self.copy
                .fill(st.log(), self.mem_next, usize::MAX)
                .map_err(PersistError::Dropped)?;
            self.encode_copy(now.wall_ms);
            self.append_taken(now)?;
            let covered = self.writer.next_seq() - 1;
            let path = dir.join(snapshot_name(covered));
            let pending = snap::write(st, &path, true, now.wall_ms, covered)?;
            Ok((pending, covered))
        });
        let locked = started.elapsed();
        let (mut pending, covered) = res?;
        self.commit(now)?;
        self.publish();
        pending.seal()?;
        self.writer.sync_soon(now)?;
        self.snapshot = Some(PendingSnapshot {
            covered,
            started,
            locked,
            stage: SnapshotStage::Sealed(Box::new(pending)),
        });
        self.poll_snapshot(false)
    }

    /// Moves the snapshot written last on: once the log is fsynced up to
    /// its position, to a thread that puts it in place; once that is done,
    /// lets retention delete what it covers and keeps the two newest
    /// snapshots. With `wait` (the log is fsynced), until it is done.
    fn poll_snapshot(&mut self, wait: bool) -> Result<(), PersistError> {
        let Some(mut p) = self.snapshot.take() else {
            return Ok(());
        };
        if let SnapshotStage::Sealed(pending) = p.stage {
            if self.writer.synced_seq() <= p.covered {
                p.stage = SnapshotStage::Sealed(pending);
                self.snapshot = Some(p);
                return Ok(());
            }
            let d = self.d.clone();
            let installing = std::thread::Builder::new()
                .name("distkv-snapshot-finish".into())
                .spawn(move || {
                    let res = pending.finish();
                    d.wake();
                    res
                });
            match installing {
                Ok(h) => p.stage = SnapshotStage::Installing(h),
                Err(source) => {
                    snapshot_failed(&SnapshotError::Io {
                        file: self.d.config.snap_dir(),
                        source,
                    });
                    return Ok(());
                }
            }
        }
        let SnapshotStage::Installing(h) = p.stage else {
            return Ok(());
        };
        if !wait && !h.is_finished() {
            p.stage = SnapshotStage::Installing(h);
            self.snapshot = Some(p);
            return Ok(());
        }
        let info = match h.join() {
            Ok(Ok(info)) => info,
            Ok(Err(e)) => {
                snapshot_failed(&e);
                return Ok(());
            }
            Err(_) => {
                tracing::error!("the thread putting a snapshot in place panicked");
                return Ok(());
            }
        };
        tracing::info!(
            seq = p.covered,
            entries = info.entries,
            bytes = info.bytes,
            locked_ms = p.locked.as_millis(),
            ms = p.started.elapsed().as_millis(),
            "snapshot written"
        );
        let dir = self.d.config.snap_dir();
        let now = self.now();
        let snaps = list_snapshots(&dir)?;
        for (_, old) in snaps.iter().skip(2) {
            std::fs::remove_file(old).map_err(|source| PersistError::Io {
                file: old.to_path_buf(),
                source,
            })?;
        }
        // Keep the log the older snapshot needs: it is the fallback when the
        // newest one turns out damaged.
        let keep_after = snaps.get(1).map_or(0, |s| s.0);
        let removed = self
            .writer
            .retain(&self.d.config.retention, keep_after, now.wall_ms)?;
        self.index.retired(&removed);
        for r in removed {
            tracing::info!(file = %r.path.display(), "log segment retired");
        }
        Ok(())
    }

    /// Drops the snapshot written last unless it is being put in place
    /// (then waits for that): the log it needs may not be on disk.
    fn abandon_snapshot(&mut self) {
        if let Some(PendingSnapshot {
            stage: SnapshotStage::Installing(h),
            ..
        }) = self.snapshot.take()
        {
            let _ = h.join();
        }
    }

    fn sleep(&self, now: Now) {
        let deadline = self
            .writer
            .sync_deadline()
            .map(|t| t.saturating_sub(now.mono_ms));
        // The log's fsync a snapshot waits for ends without a wake-up.
        let mut timeout = match self.snapshot {
            Some(PendingSnapshot {
                stage: SnapshotStage::Sealed(_),
                ..
            }) => SNAPSHOT_POLL,
            _ => Duration::from_millis(500),
        };
        if let Some(ms) = deadline {
            timeout = timeout.min(Duration::from_millis(ms.max(1)));
        }
        let g = self.d.wake.lock().unwrap_or_else(|e| e.into_inner());
        self.d.sleeping.store(true, Ordering::SeqCst);
        if !self.d.pending.swap(false, Ordering::SeqCst) {
            let _ = self.d.wake_cv.wait_timeout(g, timeout);
        }
        self.d.sleeping.store(false, Ordering::SeqCst);
        self.d.pending.store(false, Ordering::SeqCst);
    }

    /// Changes keep coming: lets them gather for up to [`GROUP_WAIT`], or
    /// until [`Durability::grew`] says a full group is there.
    fn nap(&self) {
        let g = self.d.wake.lock().unwrap_or_else(|e| e.into_inner());
        // Set under the lock, which `grew` takes to notify: the notify
        // comes once the writer waits, never before.
        self.d.napping.store(true, Ordering::SeqCst);
        let _ = self.d.wake_cv.wait_timeout(g, GROUP_WAIT);
        self.d.napping.store(false, Ordering::SeqCst);
    }

    /// Final flush at shutdown: everything written and fsynced; the tick
    /// reservation shrinks to what was used, so a clean restart leaves no
    /// gap in this node's ticks.
    fn finish(&mut self) -> Result<(), PersistError> {
        let now = self.now();
        self.drain()?;
        self.write_state_record(now)?;
        self.writer.sync(now)?;
        self.publish();
        self.poll_snapshot(true)?;
        self.index.close();
        let tick = self.host.read_state(|st| st.tick().unwrap_or(0));
        let mut m = self.d.meta.lock().unwrap_or_else(|e| e.into_inner());
        if m.reserved_tick > tick {
            m.reserved_tick = tick;
            m.store(&self.d.config.dir)?;
        }
        tracing::info!(dir = %self.d.config.dir.display(), "history written and synced");
        Ok(())
    }
}

/// How often the writer looks whether the log's fsync a snapshot waits
/// for is done.
const SNAPSHOT_POLL: Duration = Duration::from_millis(10);

/// A snapshot that could not be written: the log is fine, the next
/// snapshot point tries again.
fn snapshot_failed(e: &SnapshotError) {
    tracing::warn!(error = %e, "cannot write a snapshot; trying again later");
}

/// Runs a state change, raising the durable tick reservation when the
/// change needs ticks beyond it (and ahead of time, see
/// `Durability::reserve_ahead`).
pub fn with_reserved_ticks<T>(
    d: Option<&Arc<Durability>>,
    st: &mut State,
    mut f: impl FnMut(&mut State) -> Result<T, StateError>,
) -> Result<T, StateError> {
    if let Some(d) = d {
        d.reserve_ahead(st);
    }
    for _ in 0..4 {
        match f(st) {
            Err(StateError::TickNotReserved { next }) => {
                let Some(d) = d else {
                    return Err(StateError::TickNotReserved { next });
                };
                match d.reserve_ticks(next + TICK_BLOCK) {
                    Ok(limit) => {
                        st.set_tick_limit(Some(limit));
                        // A reservation ahead that failed may be tried again.
                        d.reserving.store(false, Ordering::Release);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot reserve ticks");
                        return Err(StateError::TickNotReserved { next });
                    }
                }
            }
            other => return other,
        }
    }
    f(st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::SharedState;
    use crate::persist::lock::{once_unlocked, Holder};
    use distkv_log::writer::RecoveryMode;
    use distkv_log::{LogLimits, LogReader};
    use distkv_model::{path, Value};
    use std::path::PathBuf;

    use std::sync::atomic::AtomicU64;

    /// A host whose clocks the test sets.
    struct ClockHost {
        state: parking_lot::Mutex<State>,
        wall: AtomicU64,
        mono: AtomicU64,
    }

    impl StateHost for ClockHost {
        fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
            f(&mut self.state.lock())
        }
        fn now_ms(&self) -> u64 {
            self.wall.load(Ordering::SeqCst)
        }
        fn mono_ms(&self) -> u64 {
            self.mono.load(Ordering::SeqCst)
        }
    }

    /// Polls `cond` until it holds; fails after 10 s.
    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "{what}: timed out");
            std::thread::yield_now();
        }
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("distkv-durable-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// Recovers `dir`, runs `f` against the live state with the writer
    /// thread running, stops cleanly; returns the digest at the end.
    fn session(
        dir: &FsPath,
        cfg: impl Fn(&mut DurableConfig),
        f: impl FnOnce(&SharedState, &Arc<Durability>),
    ) -> u128 {
        let mut c = DurableConfig::new(dir);
        cfg(&mut c);
        let rec = once_unlocked(|| recover("n1", c.clone(), LogLimits::default(), 1)).unwrap();
        let (mut state, _, wr) = rec.split();
        state.make_ready();
        let host = SharedState::new(state);
        let (d, h) = start(host.clone(), wr).unwrap();
        f(&host, &d);
        d.request_stop();
        h.join().unwrap().unwrap();
        host.with_state(|st| st.digest())
    }

    fn write(host: &SharedState, d: &Arc<Durability>, p: &distkv_model::Path, v: Option<Value>) {
        host.with_state(|st| {
            with_reserved_ticks(Some(d), st, |st| st.local_change(p, v.clone())).unwrap();
        });
        d.wake();
    }

    /// A state record names every node's tick, superseded ticks (here
    /// scattered: keys rewritten out of order, a page's worth and more)
    /// and deleted ones as the state has them.
    #[test]
    fn a_state_record_holds_the_ticks_the_state_has() {
        let dir = tempdir("state-record");
        let mut want = None;
        session(
            &dir,
            |_| {},
            |h, d| {
                for i in 0..3_000i64 {
                    // Keys drawn in a scrambled order: each key's last
                    // write falls anywhere.
                    let k = ((i * 2_654_435_761) >> 7) % 1_100;
                    write(h, d, &path!["k", k], Some(Value::Int(i)));
                }
                write(h, d, &path!["k", 5i64], None);
                want = Some(h.with_state(|st| {
                    let n = st.node("n1").expect("the node");
                    (n.tick(), n.superseded(), n.deleted().clone())
                }));
            },
        );
        let (tick, superseded, deleted) = want.expect("written");
        assert!(superseded.ranges().count() > 100, "{superseded}");
        assert!(!deleted.is_empty());
        let last = LogReader::open(&dir.join("log"), 0)
            .unwrap()
            .filter_map(|r| match r.unwrap() {
                LogRecord::State {
                    nodes,
                    known,
                    deleted,
                    ..
                } => Some((nodes, known, deleted)),
                _ => None,
            })
            .last()
            .expect("a state record at the stop");
        let n1 = distkv_model::NodeName::from("n1");
        assert_eq!(last.0, vec![(n1.clone(), tick)]);
        assert_eq!(last.1 .0.get(&n1), Some(&superseded));
        assert_eq!(last.2 .0.get(&n1), Some(&deleted));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn clean_stop_and_restart_reproduces_the_state_and_continues_ticks() {
        let dir = tempdir("restart");
        let d1 = session(
            &dir,
            |_| {},
            |h, d| {
                for i in 0..50i64 {
                    write(h, d, &path!["k", i], Some(Value::Int(i)));
                }
                write(h, d, &path!["k", 7i64], None);
            },
        );
        let mut tick = 0;
        let d2 = session(
            &dir,
            |_| {},
            |h, _| {
                tick = h.with_state(|st| st.tick().unwrap());
            },
        );
        assert_eq!(d1, d2);
        assert_eq!(tick, 51, "a clean stop leaves no gap in the ticks");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The next tick reservation is stored on a thread of its own while
    /// plenty is left, and the change after it takes it up.
    #[test]
    fn ticks_are_reserved_ahead_of_the_changes() {
        let dir = tempdir("ahead");
        session(
            &dir,
            |_| {},
            |h, d| {
                let start = h.with_state(|st| st.tick_limit()).unwrap();
                assert!(start > 2 * RESERVE_AHEAD, "reserved at the start: {start}");
                write(h, d, &path!["k"], Some(Value::Int(1)));
                assert_eq!(d.reserved_ahead.load(Ordering::Acquire), 0, "plenty left");
                // As if the reservation were nearly used up.
                let first = 10;
                h.with_state(|st| st.set_tick_limit(Some(first)));
                write(h, d, &path!["k"], Some(Value::Int(2)));
                wait_for("a reservation ahead", || {
                    d.reserved_ahead.load(Ordering::Acquire) > 0
                });
                let ahead = d.reserved_ahead.load(Ordering::Acquire);
                assert!(ahead >= 2 * RESERVE_AHEAD, "{ahead}");
                assert_eq!(Meta::open(&dir, "n1").unwrap().reserved_tick, ahead);
                assert_eq!(h.with_state(|st| st.tick_limit()), Some(first));
                write(h, d, &path!["k"], Some(Value::Int(3)));
                assert_eq!(h.with_state(|st| st.tick_limit()), Some(ahead));
            },
        );
        // A clean stop gives back what was not used.
        assert_eq!(Meta::open(&dir, "n1").unwrap().reserved_tick, 3);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn snapshots_let_old_segments_retire_and_recovery_uses_them() {
        let dir = tempdir("snap");
        let small = |c: &mut DurableConfig| {
            c.snapshot_records = 100;
            c.segment_bytes = 2048;
            c.retention = RetentionPolicy {
                max_age: None,
                max_total_bytes: Some(0),
            };
        };
        let d1 = session(&dir, small, |h, d| {
            // In chunks, each waited for, so the writer commits (and
            // rotates, snapshots, retires) many times.
            for chunk in 0..20i64 {
                for i in chunk * 50..(chunk + 1) * 50 {
                    write(h, d, &path!["k", i % 37], Some(Value::Int(i)));
                }
                let target = h.with_state(|st| st.log().next_seq()) - 1;
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while *d.durable.borrow() < target {
                    assert!(std::time::Instant::now() < deadline, "writer stuck");
                    std::thread::yield_now();
                }
            }
        });
        let snaps = list_snapshots(&dir.join("snap")).unwrap();
        assert!(!snaps.is_empty() && snaps.len() <= 2, "{snaps:?}");
        let segs = distkv_log::list_segments(&dir.join("log")).unwrap();
        assert!(
            segs.first().unwrap().first_seq > 1,
            "old segments retired: {segs:?}"
        );
        let c = DurableConfig::new(&dir);
        let rec = once_unlocked(|| recover("n1", c.clone(), LogLimits::default(), 1)).unwrap();
        assert!(rec.info.snapshot.is_some());
        assert_eq!(rec.state.digest(), d1);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_snapshot_beyond_the_logs_end_is_skipped_for_the_one_the_log_continues() {
        let dir = tempdir("beyond");
        let small = |c: &mut DurableConfig| c.snapshot_records = 40;
        session(&dir, small, |h, d| {
            for i in 0..100i64 {
                write(h, d, &path!["k", i % 13], Some(Value::Int(i)));
            }
        });
        // Events after the newest snapshot.
        let d1 = session(
            &dir,
            |c| c.snapshot_records = 1_000_000,
            |h, d| {
                for i in 100..120i64 {
                    write(h, d, &path!["k", i % 13], Some(Value::Int(i)));
                }
            },
        );
        let snaps = list_snapshots(&dir.join("snap")).unwrap();
        let (seq, newest) = snaps.first().cloned().expect("a snapshot");
        assert!(seq <= 100, "events follow the snapshot: {snaps:?}");
        // A copy named as if it covered far more than the log holds (a
        // log that lost its tail): the replay from it would miss events.
        let beyond = dir.join("snap").join(snapshot_name(10_000));
        std::fs::copy(&newest, &beyond).unwrap();
        let c = DurableConfig::new(&dir);
        let rec = once_unlocked(|| recover("n1", c.clone(), LogLimits::default(), 1)).unwrap();
        assert_eq!(rec.info.snapshot.as_ref(), Some(&newest));
        assert_eq!(
            rec.info.bad_snapshots.len(),
            1,
            "{:?}",
            rec.info.bad_snapshots
        );
        assert_eq!(rec.info.bad_snapshots[0].0, beyond);
        assert!(
            rec.info.bad_snapshots[0].1.contains("beyond the log's end"),
            "{:?}",
            rec.info.bad_snapshots
        );
        assert_eq!(rec.info.events, 120 - seq, "the events after it replayed");
        assert_eq!(rec.state.digest(), d1);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_data_directory_and_its_log_load_into_another_node() {
        let dir = tempdir("load");
        let small = |c: &mut DurableConfig| c.snapshot_records = 40;
        let d1 = session(&dir, small, |h, d| {
            for i in 0..100i64 {
                write(h, d, &path!["k", i % 13], Some(Value::Int(i)));
            }
            write(h, d, &path!["k", 3i64], None);
        });
        let mut other = State::new("n9", LogLimits::default());
        let r = crate::persist::load::load_file(&mut other, &dir).unwrap();
        assert!(r.applied > 0 && r.states > 0, "{r:?}");
        // The same data; only this node's own (empty) entry differs.
        let mut back = State::new("n1", LogLimits::default());
        crate::persist::load::load_file(&mut back, &dir).unwrap();
        assert_eq!(back.digest(), d1);
        // The segment files one by one give the same state.
        let mut seg = State::new("n1", LogLimits::default());
        for s in distkv_log::list_segments(&dir.join("log")).unwrap() {
            crate::persist::load::load_file(&mut seg, &s.path).unwrap();
        }
        assert_eq!(seg.digest(), d1);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_locked_directory_is_refused_before_anything_in_it_changes() {
        let dir = tempdir("locked");
        session(&dir, |_| {}, |_, _| {});
        let open = || recover("n1", DurableConfig::new(&dir), LogLimits::default(), 1);
        let first = once_unlocked(open).unwrap();
        let files = |d: &FsPath| -> Vec<(PathBuf, Vec<u8>)> {
            let mut out = vec![(Meta::file(d), std::fs::read(Meta::file(d)).unwrap())];
            for s in distkv_log::list_segments(&d.join("log")).unwrap() {
                out.push((s.path.clone(), std::fs::read(&s.path).unwrap()));
            }
            out
        };
        let before = files(&dir);
        let err = open().err();
        let me = std::process::id();
        assert!(
            matches!(
                err,
                Some(PersistError::Locked { holder: Holder::Node(Some(pid)), .. }) if pid == me
            ),
            "{err:?}"
        );
        assert_eq!(files(&dir), before, "the refused recovery wrote nothing");
        drop(first);
        once_unlocked(open).unwrap();
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn snapshots_state_records_and_rotation_keep_time_when_the_wall_clock_steps_back() {
        const DAY: u64 = 86_400_000;
        let dir = tempdir("clock");
        let mut c = DurableConfig::new(&dir);
        c.snapshot_records = u64::MAX;
        c.state_records = u64::MAX;
        c.fsync = FsyncPolicy::Never;
        let wall0 = 1_700_000_000_000;
        let now = Now {
            wall_ms: wall0,
            mono_ms: 1_000,
        };
        let rec = recover_at("n1", c.clone(), LogLimits::default(), now).unwrap();
        let (mut state, _, wr) = rec.split();
        state.make_ready();
        let host = Arc::new(ClockHost {
            state: parking_lot::Mutex::new(state),
            wall: AtomicU64::new(now.wall_ms),
            mono: AtomicU64::new(now.mono_ms),
        });
        let (d, h) = start(host.clone(), wr).unwrap();
        let put = |i: i64| {
            let target = host.with_state(|st| {
                with_reserved_ticks(Some(&d), st, |st| {
                    st.local_change(&path!["k", i], Some(Value::Int(i)))
                })
                .unwrap();
                st.log().next_seq() - 1
            });
            d.wake();
            wait_for("the writer", || *d.durable.borrow() >= target);
        };
        let records = |dir: &FsPath| -> Vec<LogRecord> {
            LogReader::open(&dir.join("log"), 0)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let states = |dir: &FsPath| {
            records(dir)
                .iter()
                .filter(|r| matches!(r, LogRecord::State { .. }))
                .count()
        };
        put(1);
        let states_before = states(&dir);
        // The wall clock steps a day back; the monotonic one goes on by a
        // state interval, then by a snapshot interval, then by a segment's
        // age. Each falls due on time.
        host.wall.store(wall0 - DAY, Ordering::SeqCst);
        let advance = |by: Duration| {
            host.mono.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
            d.wake();
        };
        advance(c.state_interval);
        put(2);
        wait_for("a state record", || states(&dir) > states_before);
        advance(c.snapshot_interval);
        put(3);
        wait_for("a snapshot", || {
            !list_snapshots(&c.snap_dir()).unwrap().is_empty()
        });
        advance(c.segment_age);
        put(4);
        let segments = distkv_log::list_segments(&c.log_dir()).unwrap();
        assert_eq!(segments.len(), 2, "rotated by age: {segments:?}");
        d.request_stop();
        h.join().unwrap().unwrap();
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn damage_with_valid_blocks_after_it_refuses_the_start_and_salvage_makes_its_ticks_missing() {
        let dir = tempdir("salvage");
        // One change per commit: each block holds one event.
        session(
            &dir,
            |_| {},
            |h, d| {
                for i in 0..40i64 {
                    write(h, d, &path!["k", i], Some(Value::Int(i)));
                    let target = h.with_state(|st| st.log().next_seq()) - 1;
                    wait_for("the writer", || *d.durable.borrow() >= target);
                }
            },
        );
        let log_dir = dir.join("log");
        let newest = distkv_log::list_segments(&log_dir).unwrap().pop().unwrap();
        let blocks: Vec<(u64, Vec<u64>)> = {
            let mut by_block: Vec<(u64, Vec<u64>)> = Vec::new();
            let recs = distkv_log::SegmentReader::open(&newest.path, RecoveryMode::Strict)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            for r in recs {
                let tick = match &r.record {
                    LogRecord::Event { event, .. } => Some(event.chain.head().tick),
                    _ => None,
                };
                match by_block.last_mut() {
                    Some((o, ticks)) if *o == r.offset => ticks.extend(tick),
                    _ => by_block.push((r.offset, tick.into_iter().collect())),
                }
            }
            by_block
        };
        let (offset, lost) = blocks
            .iter()
            .find(|(o, ticks)| !ticks.is_empty() && *o > newest.bytes / 3)
            .cloned()
            .unwrap();
        let mut bytes = std::fs::read(&newest.path).unwrap();
        bytes[offset as usize + 20] ^= 0x10;
        std::fs::write(&newest.path, &bytes).unwrap();

        let err = recover("n1", DurableConfig::new(&dir), LogLimits::default(), 1)
            .err()
            .unwrap();
        let PersistError::Damaged { damage, .. } = &err else {
            panic!("{err}");
        };
        let msg = format!("{err}: {damage}");
        for want in [
            newest.path.display().to_string(),
            format!("byte {offset}"),
            "server.persist.recovery=salvage".to_string(),
        ] {
            assert!(msg.contains(&want), "{want:?} not in: {msg}");
        }
        assert_eq!(std::fs::read(&newest.path).unwrap(), bytes, "untouched");

        // As after a crash: the reservation is ahead of the last change.
        let reserved = 40 + TICK_BLOCK;
        Meta {
            node: "n1".into(),
            reserved_tick: reserved,
        }
        .store(&dir)
        .unwrap();
        let mut c = DurableConfig::new(&dir);
        c.recovery = RecoveryMode::Salvage;
        let rec = recover("n1", c, LogLimits::default(), 1).unwrap();
        assert_eq!(rec.info.salvaged.len(), 1);
        assert_eq!(rec.info.lost_events, lost.len() as u64);
        // The lost ticks are missing, to be fetched back; so are those up
        // to the reservation: the lost block may have held some of them.
        assert!(rec.info.skipped.is_empty(), "no own tick declared unused");
        let mut want = RangeSet::new();
        for &t in &lost {
            want.insert(t);
        }
        want.insert_range(41, reserved + 1);
        assert_eq!(rec.state.node("n1").unwrap().missing(), want);
        for i in 0..40i64 {
            let present = rec
                .state
                .entry(&path!["k", i])
                .and_then(|e| e.data())
                .is_some();
            let tick = i as u64 + 1;
            assert_eq!(present, !lost.contains(&tick), "k.{i}");
        }
        let kept = std::fs::read(&rec.info.salvaged[0].kept).unwrap();
        assert_eq!(kept, bytes, "the damaged file is kept");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn salvage_mode_salvages_the_closed_segments_the_replay_reads() {
        let dir = tempdir("salvage-closed");
        let small = |c: &mut DurableConfig| c.segment_bytes = 1024;
        session(&dir, small, |h, d| {
            for i in 0..60i64 {
                write(h, d, &path!["k", i], Some(Value::Int(i)));
                let target = h.with_state(|st| st.log().next_seq()) - 1;
                wait_for("the writer", || *d.durable.borrow() >= target);
            }
        });
        let segs = distkv_log::list_segments(&dir.join("log")).unwrap();
        assert!(segs.len() >= 3, "{segs:?}");
        // A block in the middle of the first segment.
        let victim = &segs[0].path;
        let offsets: Vec<u64> = distkv_log::SegmentReader::open(victim, RecoveryMode::Strict)
            .unwrap()
            .map(|r| r.unwrap().offset)
            .collect();
        let mut bytes = std::fs::read(victim).unwrap();
        bytes[offsets[offsets.len() / 2] as usize + 20] ^= 0x10;
        std::fs::write(victim, &bytes).unwrap();
        let err = recover("n1", DurableConfig::new(&dir), LogLimits::default(), 1).err();
        assert!(matches!(err, Some(PersistError::Damaged { .. })), "{err:?}");
        let mut c = DurableConfig::new(&dir);
        c.recovery = RecoveryMode::Salvage;
        let rec = recover("n1", c, LogLimits::default(), 1).unwrap();
        assert_eq!(rec.info.salvaged.len(), 1);
        assert_eq!(&rec.info.salvaged[0].file, victim);
        assert_eq!(rec.info.lost.len(), 1);
        assert_eq!(
            rec.state.node("n1").unwrap().missing().count(),
            rec.info.lost_events
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_failing_writer_keeps_events_pinned_retries_and_resumes_by_itself() {
        let dir = tempdir("stall");
        let c = DurableConfig::new(&dir);
        let rec = once_unlocked(|| recover("n1", c.clone(), LogLimits::default(), 1)).unwrap();
        let (mut state, _, wr) = rec.split();
        state.make_ready();
        let host = SharedState::new(state);
        let (d, h) = start(host.clone(), wr).unwrap();
        let pinned = || host.with_state(|st| st.log().pinned());
        write(&host, &d, &path!["k", 0i64], Some(Value::Int(0)));
        wait_for("the first write", || pinned().0 == 0);
        assert_eq!(d.admits(pinned()), Ok(()));

        d.inject_fault(Some("no space left on device"));
        for i in 1..=10i64 {
            write(&host, &d, &path!["k", i], Some(Value::Int(i)));
        }
        wait_for("the stall", || d.failed());
        let why = d.trouble().unwrap();
        assert!(why.contains("no space left on device"), "{why}");
        assert!(matches!(d.admits(pinned()), Err(Refusal::Storage(_))));
        // Nothing written, so everything stays pinned, however often the
        // writer tries.
        assert_eq!(pinned().0, 10);
        let durable = *d.durable.borrow();

        d.inject_fault(None);
        wait_for("the writer to resume", || !d.failed());
        wait_for("the pinned events to be written", || pinned().0 == 0);
        // The pins are released just before the durable position is
        // published.
        wait_for("the durable position", || {
            *d.durable.borrow() >= durable + 10
        });
        assert_eq!(d.admits(pinned()), Ok(()));
        d.request_stop();
        h.join().unwrap().unwrap();
        let digest = host.with_state(|st| st.digest());
        drop(d);
        let rec = recover("n1", c, LogLimits::default(), 1).unwrap();
        assert_eq!(rec.state.digest(), digest, "every event reached the log");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Snapshots sealed, waiting for the log's fsync or being put in place
    /// while the writer fails and reopens the log, again and again: no
    /// temporary file stays, every snapshot in place reads cleanly, and
    /// recovery gives the state the node had.
    #[test]
    fn snapshots_in_flight_when_the_writer_fails_leave_only_whole_snapshots() {
        let dir = tempdir("snapfail");
        let mut c = DurableConfig::new(&dir);
        c.snapshot_records = 30;
        c.segment_bytes = 2048;
        c.retention = RetentionPolicy {
            max_age: None,
            max_total_bytes: Some(0),
        };
        let rec = once_unlocked(|| recover("n1", c.clone(), LogLimits::default(), 1)).unwrap();
        let (mut state, _, wr) = rec.split();
        state.make_ready();
        let host = SharedState::new(state);
        let (d, h) = start(host.clone(), wr).unwrap();
        let mut i = 0i64;
        for round in 0..12 {
            for _ in 0..40 {
                write(&host, &d, &path!["k", i % 17], Some(Value::Int(i)));
                i += 1;
            }
            if round % 2 == 1 {
                d.inject_fault(Some("no space left on device"));
                for _ in 0..10 {
                    write(&host, &d, &path!["k", i % 17], Some(Value::Int(i)));
                    i += 1;
                }
                wait_for("the stall", || d.failed());
                d.inject_fault(None);
                wait_for("the writer to resume", || !d.failed());
            }
            let target = host.with_state(|st| st.log().next_seq()) - 1;
            wait_for("the writer", || *d.durable.borrow() >= target);
        }
        d.request_stop();
        h.join().unwrap().unwrap();
        let digest = host.with_state(|st| st.digest());
        drop(d);
        let snap_dir = c.snap_dir();
        for f in std::fs::read_dir(&snap_dir).unwrap() {
            let f = f.unwrap().path();
            assert!(!f.to_string_lossy().ends_with(".tmp"), "left behind: {f:?}");
        }
        let snaps = list_snapshots(&snap_dir).unwrap();
        assert!((1..=2).contains(&snaps.len()), "{snaps:?}");
        for (_, f) in &snaps {
            distkv_snapshot::SnapshotReader::verify(f).unwrap();
        }
        let rec = recover("n1", c, LogLimits::default(), 1).unwrap();
        assert!(rec.info.snapshot.is_some());
        assert_eq!(rec.state.digest(), digest);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_backlog_gate_counts_pinned_events_and_bytes() {
        let dir = tempdir("backlog");
        let mut c = DurableConfig::new(&dir);
        c.max_backlog = 5;
        c.max_backlog_bytes = 1 << 20;
        let rec = once_unlocked(|| recover("n1", c.clone(), LogLimits::default(), 1)).unwrap();
        let (_, _, wr) = rec.split();
        let host = SharedState::new(State::new("n1", LogLimits::default()));
        let (d, h) = start(host, wr).unwrap();
        assert_eq!(d.admits((5, 100)), Ok(()));
        assert!(matches!(
            d.admits((6, 100)),
            Err(Refusal::Backlog { records: 6, .. })
        ));
        assert!(matches!(
            d.admits((1, (1 << 20) + 1)),
            Err(Refusal::Backlog { .. })
        ));
        d.request_stop();
        h.join().unwrap().unwrap();
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_stop_while_the_writer_fails_gives_up_after_stop_retry() {
        let dir = tempdir("stop-retry");
        let mut c = DurableConfig::new(&dir);
        c.stop_retry = Duration::from_millis(300);
        let rec = once_unlocked(|| recover("n1", c.clone(), LogLimits::default(), 1)).unwrap();
        let (mut state, _, wr) = rec.split();
        state.make_ready();
        let host = SharedState::new(state);
        let (d, h) = start(host.clone(), wr).unwrap();
        d.inject_fault(Some("no space left on device"));
        for i in 1..=3i64 {
            write(&host, &d, &path!["k", i], Some(Value::Int(i)));
        }
        wait_for("the stall", || d.failed());
        let t0 = std::time::Instant::now();
        d.request_stop();
        let res = h.join().unwrap();
        assert!(
            t0.elapsed() >= Duration::from_millis(300),
            "gave up after {:?}",
            t0.elapsed()
        );
        let err = res.err().unwrap().to_string();
        assert!(err.contains("no space left on device"), "{err}");
        assert!(d.failed(), "a writer that gave up refuses changes");
        drop(d);
        // The three events never reached the log.
        let rec = recover("n1", DurableConfig::new(&dir), LogLimits::default(), 1).unwrap();
        for i in 1..=3i64 {
            assert!(rec.state.entry(&path!["k", i]).is_none(), "k.{i}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_directory_of_another_node_is_refused() {
        let dir = tempdir("owner");
        session(&dir, |_| {}, |_, _| {});
        let err =
            once_unlocked(|| recover("n2", DurableConfig::new(&dir), LogLimits::default(), 1))
                .err();
        assert!(matches!(
            err,
            Some(PersistError::Meta(MetaError::WrongNode { .. }))
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
