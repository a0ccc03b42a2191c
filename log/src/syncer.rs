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
//! itself ([`LogWriter::sync`](crate::LogWriter::sync), rotation, close)
//! runs beside a running one and then waits for it too, so that its
//! success means what it says.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

/// The outcome of one fsync: the file's path with the error.
pub(crate) type Outcome = Result<(), (PathBuf, io::Error)>;

/// The fsync thread; dropping it waits for a running fsync and stops it.
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
    /// Test hook: the next fsync fails.
    #[cfg(test)]
    fail_next: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Slot {
    /// The file to fsync next.
    job: Option<(File, PathBuf)>,
    /// Whether the thread is fsyncing.
    running: bool,
    /// The outcome of the last fsync, until collected.
    done: Option<Outcome>,
    stop: bool,
}

impl Slot {
    fn busy(&self) -> bool {
        self.job.is_some() || self.running
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

    /// Has `file` fsynced; only when not [`busy`](Syncer::busy) (the one
    /// writer looks first).
    pub(crate) fn start(&self, file: File, path: PathBuf) {
        let mut slot = self.shared.lock();
        debug_assert!(!slot.busy(), "one fsync at a time");
        slot.job = Some((file, path));
        self.shared.changed.notify_all();
    }

    /// The outcome of a finished fsync not collected yet.
    pub(crate) fn take_done(&self) -> Option<Outcome> {
        self.shared.lock().done.take()
    }

    /// Waits until no fsync is queued or running, then collects the
    /// outcome of the last one (if not collected yet).
    pub(crate) fn wait(&self) -> Option<Outcome> {
        let mut slot = self.shared.lock();
        while slot.busy() {
            slot = self
                .shared
                .changed
                .wait(slot)
                .unwrap_or_else(PoisonError::into_inner);
        }
        slot.done.take()
    }

    /// Test hook: hold this lock to hold the fsyncs back.
    #[cfg(test)]
    pub(crate) fn hold(&self) -> Arc<Mutex<()>> {
        self.shared.hold.clone()
    }

    /// Test hook: the next fsync fails.
    #[cfg(test)]
    pub(crate) fn fail_next(&self) {
        self.shared
            .fail_next
            .store(true, std::sync::atomic::Ordering::SeqCst);
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
            if let Some((file, path)) = slot.job.take() {
                slot.running = true;
                drop(slot);
                let outcome = self.sync(&file).map_err(|e| (path, e));
                slot = self.lock();
                slot.running = false;
                // An error not collected yet is never covered up.
                if !matches!(slot.done, Some(Err(_))) {
                    slot.done = Some(outcome);
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

    fn sync(&self, file: &File) -> io::Result<()> {
        #[cfg(test)]
        {
            let _held = self.hold.lock().unwrap_or_else(PoisonError::into_inner);
            if self
                .fail_next
                .swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                return Err(io::Error::other("injected fsync failure"));
            }
        }
        file.sync_data()
    }
}
