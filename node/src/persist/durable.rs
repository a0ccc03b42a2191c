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
//! writes everything, fsyncs, and records a clean stop. Every interval —
//! state records, snapshots, fsync, segment age — is measured on a
//! monotonic clock ([`StateHost::mono_ms`]); the wall clock only stamps
//! records, headers and snapshots, so a clock stepped back or forth
//! neither stalls nor hurries them.
//!
//! The disk log's positions count state records too, so they differ from
//! the in-memory log's; the writer maps one to the other.

use std::path::Path as FsPath;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use distkv_log::writer::{FsyncPolicy, LogWriter, Now};
use distkv_log::{LogError, LogRecord, RetentionPolicy, Seq};
use distkv_model::{NodeSet, RangeSet};
use tokio::sync::watch;

use super::lock::DirLock;
use super::meta::{Meta, MetaError, TICK_BLOCK};
use super::snap;
use crate::state::{State, StateError};
pub use distkv_core::persist::recover::{
    list_snapshots, monotonic_ms, recover, recover_at, resume_above_reservation, resume_after_loss,
    snapshot_name, DurableConfig, PersistError, Recovered, RecoveredWriter, RecoveryInfo,
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
    c.segment_bytes = settings.segment_max_bytes;
    c.segment_age = settings.segment_max_age;
    c.snapshot_records = settings.snapshot_records;
    c.snapshot_interval = settings.snapshot_interval;
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
    stop: AtomicBool,
    rotate: AtomicBool,
    /// The writer failed: nothing more reaches the disk.
    failed: AtomicBool,
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

    /// Whether the writer failed (changes can no longer be made durable).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Most events allowed to wait for the disk.
    pub fn max_backlog(&self) -> usize {
        self.config.max_backlog
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

    /// Waits until the in-memory log is durable up to `seq`.
    pub async fn wait_durable(&self, seq: Seq) {
        let mut rx = self.durable.subscribe();
        let _ = rx
            .wait_for(|&d| d >= seq || self.stop.load(Ordering::Acquire))
            .await;
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

/// Access to the state for the writer thread: lock it, and learn how the
/// clock reads.
pub trait StateHost: Send + Sync + 'static {
    /// Runs `f` with the state locked.
    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R;
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
        stop: AtomicBool::new(false),
        rotate: AtomicBool::new(false),
        failed: AtomicBool::new(false),
        _lock: lock,
    });
    let d2 = d.clone();
    let h = std::thread::Builder::new()
        .name("distkv-log-writer".into())
        .spawn(move || {
            let mut w = WriterLoop {
                host,
                d: d2.clone(),
                writer,
                mem_next,
                skipped,
                since_state: 0,
                since_snapshot: 0,
                last_state_mono: 0,
                last_snapshot_mono: 0,
            };
            let res = w.run();
            if let Err(e) = &res {
                d2.failed.store(true, Ordering::Release);
                tracing::error!(error = %e, "the log writer failed; the node refuses changes from now on");
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
    /// Next in-memory log record to write.
    mem_next: Seq,
    /// Own ticks declared never used at this start, for the first state
    /// record.
    skipped: RangeSet,
    since_state: u64,
    since_snapshot: u64,
    /// Monotonic time of the last state record and snapshot.
    last_state_mono: u64,
    last_snapshot_mono: u64,
}

/// Events taken from the in-memory log per lock.
const BATCH: usize = 4096;

impl<H: StateHost> WriterLoop<H> {
    /// The time on both clocks.
    fn now(&self) -> Now {
        Now {
            wall_ms: self.host.now_ms(),
            mono_ms: self.host.mono_ms(),
        }
    }

    fn run(&mut self) -> Result<(), PersistError> {
        let now = self.now();
        self.last_state_mono = now.mono_ms;
        self.last_snapshot_mono = now.mono_ms;
        // Record the recovered bookkeeping at once: own ticks skipped after
        // an unclean stop are then documented in the log.
        self.write_state_record(now)?;
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
                self.writer.commit(now)?;
                self.publish();
            }
            self.writer.sync_if_due(now)?;
            self.housekeeping(now)?;
            if stopping {
                return self.finish();
            }
            if wrote == 0 {
                self.sleep(now);
            }
        }
    }

    /// Writes every in-memory record not written yet; returns how many.
    fn drain(&mut self) -> Result<u64, PersistError> {
        let mut total = 0;
        loop {
            let batch: Vec<_> = self
                .host
                .with_state(|st| match st.log().read(self.mem_next, BATCH) {
                    Ok(it) => Ok(it.map(|(_, e)| e.clone()).collect()),
                    Err(lag) => Err(lag),
                })
                .map_err(|lag| {
                    PersistError::Log(LogError::InvalidInput(format!(
                        "in-memory log dropped records the writer had not written ({lag})"
                    )))
                })?;
            if batch.is_empty() {
                return Ok(total);
            }
            let now = self.now();
            for ev in &batch {
                append_event(&mut self.writer, now, ev)?;
            }
            let n = batch.len() as u64;
            self.mem_next += n;
            total += n;
            self.since_state += n;
            self.since_snapshot += n;
            if batch.len() < BATCH {
                return Ok(total);
            }
        }
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
        if self.since_snapshot > 0
            && (self.since_snapshot >= c.snapshot_records
                || due(self.last_snapshot_mono, c.snapshot_interval))
        {
            self.snapshot(now)?;
        }
        Ok(())
    }

    fn write_state_record(&mut self, now: Now) -> Result<(), PersistError> {
        let (nodes, known, deleted) = self.host.with_state(|st| {
            let mut known = NodeSet::default();
            let mut deleted = NodeSet::default();
            let mut nodes = Vec::new();
            for (n, i) in st.nodes() {
                nodes.push((n.clone(), i.tick()));
                known.0.insert(n.clone(), i.superseded());
                deleted.0.insert(n.clone(), i.deleted().clone());
            }
            (nodes, known, deleted)
        });
        // A state record carries the position of the last event before it.
        let seq = self.writer.next_seq() - 1;
        self.writer.append(&LogRecord::State {
            seq,
            time_ms: now.wall_ms,
            nodes,
            known,
            deleted,
            skipped: std::mem::take(&mut self.skipped),
        })?;
        self.writer.commit(now)?;
        self.since_state = 0;
        self.last_state_mono = now.mono_ms;
        Ok(())
    }

    /// Takes a snapshot at the current log position, then lets retention
    /// delete what it covers and keeps the two newest snapshots.
    fn snapshot(&mut self, now: Now) -> Result<(), PersistError> {
        let dir = self.d.config.snap_dir();
        // Under the lock: write what is pending, then the state as of that
        // position, so the snapshot covers exactly up to `covered`.
        let host = self.host.clone();
        let res = host.with_state(|st| -> Result<_, PersistError> {
            let batch: Vec<_> = match st.log().read(self.mem_next, usize::MAX) {
                Ok(it) => it.map(|(_, e)| e.clone()).collect(),
                Err(_) => Vec::new(),
            };
            for ev in &batch {
                append_event(&mut self.writer, now, ev)?;
            }
            self.mem_next += batch.len() as u64;
            let covered = self.writer.next_seq() - 1;
            let path = dir.join(snapshot_name(covered));
            let pending = snap::write(st, &path, true, now.wall_ms, covered)?;
            Ok((pending, covered))
        });
        let (pending, covered) = res?;
        self.writer.commit(now)?;
        self.writer.sync(now)?;
        self.publish();
        let info = pending.finish()?;
        tracing::info!(
            seq = covered,
            entries = info.entries,
            bytes = info.bytes,
            "snapshot written"
        );
        self.since_snapshot = 0;
        self.last_snapshot_mono = now.mono_ms;
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
        for r in removed {
            tracing::info!(file = %r.path.display(), "log segment retired");
        }
        Ok(())
    }

    fn sleep(&self, now: Now) {
        let deadline = self
            .writer
            .sync_deadline()
            .map(|t| t.saturating_sub(now.mono_ms));
        let mut timeout = Duration::from_millis(500);
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

    /// Final flush at shutdown: everything written and fsynced; the tick
    /// reservation shrinks to what was used, so a clean restart leaves no
    /// gap in this node's ticks.
    fn finish(&mut self) -> Result<(), PersistError> {
        let now = self.now();
        self.drain()?;
        self.write_state_record(now)?;
        self.writer.sync(now)?;
        self.publish();
        let tick = self.host.with_state(|st| st.tick().unwrap_or(0));
        let mut m = self.d.meta.lock().unwrap_or_else(|e| e.into_inner());
        if m.reserved_tick > tick {
            m.reserved_tick = tick;
            m.store(&self.d.config.dir)?;
        }
        tracing::info!(dir = %self.d.config.dir.display(), "history written and synced");
        Ok(())
    }
}

/// Appends an event, committing the pending group first if it is full.
fn append_event(
    w: &mut LogWriter,
    now: Now,
    ev: &distkv_model::UpdateEvent,
) -> Result<(), PersistError> {
    match w.append_event(now.wall_ms, ev) {
        Err(LogError::Full { .. }) => {
            w.commit(now)?;
            w.append_event(now.wall_ms, ev)?;
            Ok(())
        }
        r => r.map(|_| ()).map_err(PersistError::from),
    }
}

/// Runs a state change, raising the durable tick reservation when the
/// change needs ticks beyond it.
pub fn with_reserved_ticks<T>(
    d: Option<&Durability>,
    st: &mut State,
    mut f: impl FnMut(&mut State) -> Result<T, StateError>,
) -> Result<T, StateError> {
    for _ in 0..4 {
        match f(st) {
            Err(StateError::TickNotReserved { next }) => {
                let Some(d) = d else {
                    return Err(StateError::TickNotReserved { next });
                };
                match d.reserve_ticks(next + TICK_BLOCK) {
                    Ok(limit) => st.set_tick_limit(Some(limit)),
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
    use crate::persist::lock::{once_unlocked, Holder};
    use distkv_log::writer::RecoveryMode;
    use distkv_log::{LogLimits, LogReader};
    use distkv_model::{path, Value};
    use std::path::PathBuf;

    use std::sync::atomic::AtomicU64;

    struct Host(parking_lot::Mutex<State>);

    impl StateHost for Host {
        fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
            f(&mut self.0.lock())
        }
        fn now_ms(&self) -> u64 {
            crate::server::now_ms()
        }
    }

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
        f: impl FnOnce(&Host, &Durability),
    ) -> u128 {
        let mut c = DurableConfig::new(dir);
        cfg(&mut c);
        let rec = once_unlocked(|| recover("n1", c.clone(), LogLimits::default(), 1)).unwrap();
        let (mut state, _, wr) = rec.split();
        state.make_ready();
        let host = Arc::new(Host(parking_lot::Mutex::new(state)));
        let (d, h) = start(host.clone(), wr).unwrap();
        f(&host, &d);
        d.request_stop();
        h.join().unwrap().unwrap();
        let digest = host.0.lock().digest();
        digest
    }

    fn write(host: &Host, d: &Durability, p: &[Value], v: Option<Value>) {
        host.with_state(|st| {
            with_reserved_ticks(Some(d), st, |st| st.local_change(p, v.clone())).unwrap();
        });
        d.wake();
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
                tick = h.0.lock().tick().unwrap();
            },
        );
        assert_eq!(d1, d2);
        assert_eq!(tick, 51, "a clean stop leaves no gap in the ticks");
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
                let target = h.0.lock().log().next_seq() - 1;
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
                    let target = h.0.lock().log().next_seq() - 1;
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
                let target = h.0.lock().log().next_seq() - 1;
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
