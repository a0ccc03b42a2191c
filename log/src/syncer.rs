//! fsync on a thread of the writer's own, for
//! [`FsyncPolicy::Interval`](crate::FsyncPolicy::Interval) with
//! [`WriterConfig::sync_in_background`](crate::WriterConfig::sync_in_background).
//!
//! An fsync takes as long as the disk needs to write back what the page
//! cache holds for the file, which on a busy or slow disk is hundreds of
//! milliseconds. Done by the writer itself, nothing is appended meanwhile:
//! acknowledged changes pile up in memory until the backlog bound stops
//! the writers. Here the writer hands a second handle of the segment
//! ([`File::try_clone`], the same open file) to this thread and goes on
//! writing; at most one fsync runs at a time. What it finds is collected
//! by the writer at its next call, and an error fails the writer as its
//! own fsync's would (an fsync error is reported once, to one of the
//! handles: this thread keeps it until collected). An fsync the writer does
//! itself ([`LogWriter::sync`](crate::LogWriter::sync), close) runs beside
//! a running one and then waits for what runs here, so that its success
//! means what it says.
//!
//! A rotation is made durable here too ([`Job::Rotated`]), so that it holds
//! the writer for no fsync at all: the closed segment's fsync, then the new
//! segment's (written to meanwhile under a pending name), its rename to its
//! segment name and the directory's fsync, in that order, so that a
//! segment is named only once its predecessor is durable (see the writer's
//! module docs). It may wait behind one fsync of the segment it closes;
//! jobs run in order, and after a failed one the rest are dropped.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use crate::Seq;

/// The outcome of one fsync: the file's path with the error.
pub(crate) type Outcome = Result<(), (PathBuf, io::Error)>;

/// What the thread makes durable; `upto` is the seq after the last event
/// it covers once done.
pub(crate) enum Job {
    /// The data written to the segment `path` (`fdatasync`).
    Data {
        file: File,
        path: PathBuf,
        upto: Seq,
    },
    /// The segment `path`, size and header included (`fsync`), then the
    /// directory `dir`, which names it: the first fsync of a segment found
    /// when opening.
    Created {
        file: File,
        path: PathBuf,
        dir: PathBuf,
        upto: Seq,
    },
    /// A rotation: the closed segment's data (`fdatasync`), then the new
    /// segment, written so far under its pending name (`fsync`), renamed
    /// to `path`, then the directory `dir`. Nothing is written to `old`
    /// any more; the writer goes on writing to `new`.
    Rotated {
        old: File,
        old_path: PathBuf,
        new: File,
        pending: PathBuf,
        path: PathBuf,
        dir: PathBuf,
        upto: Seq,
    },
}

/// One fsync of a file, `how` being [`File::sync_data`] or
/// [`File::sync_all`]: on the thread, through its test hooks; elsewhere
/// [`plain_fsync`].
pub(crate) type Fsync<'a> = &'a dyn Fn(&File, fn(&File) -> io::Result<()>) -> io::Result<()>;

/// An fsync done at once, by the caller.
pub(crate) fn plain_fsync(file: &File, how: fn(&File) -> io::Result<()>) -> io::Result<()> {
    how(file)
}

impl Job {
    fn upto(&self) -> Seq {
        match self {
            Job::Data { upto, .. } | Job::Created { upto, .. } | Job::Rotated { upto, .. } => *upto,
        }
    }

    /// Does the job, each fsync with `fsync`: the thread's way, and the
    /// way of whoever must do the same without it (finishing an
    /// interrupted rotation when the log is opened), so that the order
    /// that keeps a segment unnamed until its predecessor is durable is
    /// written once.
    pub(crate) fn run(self, fsync: Fsync) -> Outcome {
        match self {
            Job::Data { file, path, .. } => fsync(&file, File::sync_data).map_err(|e| (path, e)),
            Job::Created {
                file, path, dir, ..
            } => sync_created(&file, &path, &dir, fsync),
            Job::Rotated {
                old,
                old_path,
                new,
                pending,
                path,
                dir,
                ..
            } => {
                fsync(&old, File::sync_data).map_err(|e| (old_path, e))?;
                drop(old);
                fsync(&new, File::sync_all).map_err(|e| (pending.clone(), e))?;
                std::fs::rename(&pending, &path).map_err(|e| (pending, e))?;
                sync_dir(&dir, fsync)
            }
        }
    }
}

/// Makes a segment just created durable: the file `path`, size and header
/// included, then the directory `dir`, which names it.
pub(crate) fn sync_created(file: &File, path: &Path, dir: &Path, fsync: Fsync) -> Outcome {
    fsync(file, File::sync_all).map_err(|e| (path.to_path_buf(), e))?;
    sync_dir(dir, fsync)
}

/// fsyncs the directory `dir`.
fn sync_dir(dir: &Path, fsync: Fsync) -> Outcome {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| fsync(&d, File::sync_all))
        .map_err(|e| (dir.to_path_buf(), e))?;
    #[cfg(not(unix))]
    let _ = (dir, fsync);
    Ok(())
}

/// The fsync thread; dropping it waits for the jobs queued and stops it.
pub(crate) struct Syncer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    slot: Mutex<Slot>,
    changed: Condvar,
    /// Test hook: the thread takes this lock around each fsync, so a test
    /// holding it holds the fsync back.
    #[cfg(test)]
    hold: Arc<Mutex<()>>,
    /// Test hook: the fsync this many fsyncs from now fails (0: none).
    #[cfg(test)]
    fail_in: std::sync::atomic::AtomicU64,
    /// Test hook: the fsyncs run (files and directories).
    #[cfg(test)]
    fsyncs: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Slot {
    /// What to do next, in order.
    jobs: VecDeque<Job>,
    /// Whether the thread is at a job.
    running: bool,
    /// Rotations queued or running.
    rotations: usize,
    /// The outcome of the jobs done since the last collection: the first
    /// error, or success.
    done: Option<Outcome>,
    /// The highest `upto` of a job done.
    synced_upto: Seq,
    stop: bool,
}

impl Slot {
    fn busy(&self) -> bool {
        !self.jobs.is_empty() || self.running
    }
}

impl Syncer {
    /// Starts the thread.
    pub(crate) fn spawn() -> io::Result<Syncer> {
        let shared = Arc::new(Shared::default());
        let thread = std::thread::Builder::new()
            .name("distkv-log-sync".into())
            .spawn({
                let shared = shared.clone();
                move || shared.run()
            })?;
        Ok(Syncer {
            shared,
            thread: Some(thread),
        })
    }

    /// Whether an fsync is queued or running.
    pub(crate) fn busy(&self) -> bool {
        self.shared.lock().busy()
    }

    /// Whether a rotation is queued or running.
    pub(crate) fn rotating(&self) -> bool {
        self.shared.lock().rotations > 0
    }

    /// Queues `job`. The writer starts an fsync of the open segment only
    /// when not [`busy`](Syncer::busy); a rotation may wait behind one.
    pub(crate) fn start(&self, job: Job) {
        let mut slot = self.shared.lock();
        debug_assert!(
            matches!(job, Job::Rotated { .. }) || !slot.busy(),
            "one fsync of the open segment at a time"
        );
        slot.rotations += matches!(job, Job::Rotated { .. }) as usize;
        slot.jobs.push_back(job);
        self.shared.changed.notify_all();
    }

    /// The seq after the last event a finished job covers.
    pub(crate) fn synced_upto(&self) -> Seq {
        self.shared.lock().synced_upto
    }

    /// The outcome of the jobs finished since the last collection.
    pub(crate) fn take_done(&self) -> Option<Outcome> {
        self.shared.lock().done.take()
    }

    /// Waits until no fsync is queued or running, then collects the
    /// outcome of the last one (if not collected yet).
    pub(crate) fn wait(&self) -> Option<Outcome> {
        self.settle();
        self.shared.lock().done.take()
    }

    /// Waits until no job is queued or running; leaves the outcome to be
    /// collected.
    pub(crate) fn settle(&self) {
        let mut slot = self.shared.lock();
        while slot.busy() {
            slot = self
                .shared
                .changed
                .wait(slot)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Test hook: hold this lock to hold the fsyncs back.
    #[cfg(test)]
    pub(crate) fn hold(&self) -> Arc<Mutex<()>> {
        self.shared.hold.clone()
    }

    /// Test hook: how many fsyncs ran (files and directories).
    #[cfg(test)]
    pub(crate) fn fsyncs(&self) -> u64 {
        self.shared.fsyncs.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Test hook: the next fsync fails.
    #[cfg(test)]
    pub(crate) fn fail_next(&self) {
        self.fail_in(1);
    }

    /// Test hook: the `n`-th fsync from now fails.
    #[cfg(test)]
    pub(crate) fn fail_in(&self, n: u64) {
        self.shared
            .fail_in
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self) {
        let mut slot = self.lock();
        loop {
            if let Some(job) = slot.jobs.pop_front() {
                slot.running = true;
                drop(slot);
                let rotation = matches!(job, Job::Rotated { .. });
                let upto = job.upto();
                let outcome = job.run(&|file, how| self.sync(file, how));
                slot = self.lock();
                slot.running = false;
                slot.rotations -= rotation as usize;
                match outcome {
                    Ok(()) => {
                        slot.synced_upto = slot.synced_upto.max(upto);
                        // An error not collected yet is never covered up.
                        slot.done.get_or_insert(Ok(()));
                    }
                    Err(e) => {
                        // What the page cache holds is unknown now: nothing
                        // queued behind may count on it (a rotation would
                        // name a segment whose predecessor may not be
                        // durable). The writer fails at its next call.
                        slot.rotations = 0;
                        slot.jobs.clear();
                        if !matches!(slot.done, Some(Err(_))) {
                            slot.done = Some(Err(e));
                        }
                    }
                }
                self.changed.notify_all();
            } else if slot.stop {
                return;
            } else {
                slot = self
                    .changed
                    .wait(slot)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
    }

    /// Runs one fsync (`how`: data or all) of `file`.
    fn sync(&self, file: &File, how: fn(&File) -> io::Result<()>) -> io::Result<()> {
        #[cfg(test)]
        {
            let _held = self.hold.lock().unwrap_or_else(PoisonError::into_inner);
            self.fsyncs
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let left = self.fail_in.load(std::sync::atomic::Ordering::SeqCst);
            if left > 0 {
                self.fail_in
                    .store(left - 1, std::sync::atomic::Ordering::SeqCst);
                if left == 1 {
                    return Err(io::Error::other("injected fsync failure"));
                }
            }
        }
        how(file)
    }
}
