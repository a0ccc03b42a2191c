//! A node's start read on a thread of its own, ahead of the replay.
//!
//! A start is two jobs of about the same size: reading its files (each
//! block's checksum and decompression, each snapshot item's and log
//! record's decoding) and applying what was read to the state, one entry
//! or event after the other. [`Ahead`] reads on a thread of its own and
//! hands over what it read in batches, so that reading takes a core of its
//! own (docs/perf.md, "A node's start reads on a thread of its own").
//!
//! The thread reads the snapshot first, then waits: the replay decides
//! where the log is read from once the snapshot is loaded (and salvages
//! damaged segments before anything reads them), and tells it
//! ([`Ahead::read_log`]). Every value the state will hold is decoded on
//! that one thread, the snapshot's as the log's: the values the log's
//! events replace are then freed into the heap the next ones are decoded
//! into, as on one thread. (A start that loaded its snapshot on the
//! replaying thread and read only its log on another held 50 MB more
//! after it at 1 M keys: the replaced values left holes in a heap nothing
//! allocated values from any more.) For the same reason the snapshot's
//! paths and the events the replay is done with go back to the reading
//! thread to be dropped there ([`Ahead::spent`]), into its own heap and
//! with no count's cache line passed between the cores.
//!
//! What waits is bounded: a batch holds at most [`BATCH`] items or
//! records, and at most [`QUEUED`] batches wait. After an error the thread
//! stops, as the replay does. A panic of the reading thread is resumed on
//! the replaying one, never taken for the end of the files. Dropping an
//! [`Ahead`] stops its thread at its next batch. If the system gives no
//! thread, everything is read on the replaying thread, in the same order.

use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};
use std::thread::JoinHandle;

use distkv_log::writer::RecoveryMode;
use distkv_log::{LogError, LogLimits, LogReader, LogRecord, Seq};
use distkv_model::{Chain, NodeName, Packed, UpdateEvent, Value};
use distkv_snapshot::{EntryRef, ItemRef, NodeRecord, SnapshotError, SnapshotReader};

use super::snap;
use crate::state::{SeenBatch, State};

/// Items or records in a batch at most.
const BATCH: usize = 1024;

/// Batches waiting for the replay at most.
const QUEUED: usize = 4;

/// A snapshot item, its path (for an entry) in its batch's `paths`.
enum SnapItem {
    Node(NodeRecord),
    Entry {
        path: Range<usize>,
        value: Option<Value>,
        chain: Option<Chain>,
        tock: u64,
    },
}

/// Snapshot items read on the thread.
struct SnapBatch {
    /// The entries' paths, one after the other.
    paths: Vec<Value>,
    items: Vec<SnapItem>,
    /// The file's bytes read after them, and its size.
    read: u64,
    total: u64,
}

/// What the reading thread hands over, in this order: the snapshot's
/// batches and its end (or failure), then the log's batches and its end.
enum Part {
    Snap(SnapBatch),
    /// The snapshot is read whole: its tock.
    SnapEnd(u64),
    SnapFailed(SnapshotError),
    /// Log records; an error is the last of them.
    Log(Vec<Result<LogRecord, LogError>>),
    /// The log is read to its end: the reader, for what it found.
    LogEnd(Box<LogReader>),
}

/// What the replay sends back to the reading thread.
enum Back {
    /// A snapshot batch's paths, to drop there.
    Paths(Vec<Value>),
    /// Events, and values they replaced, to drop there.
    Spent(Spent),
    /// Read the log from this seq, leaving out of its state records the
    /// ticks of these first runs of seen ticks.
    ReadLog {
        from: Seq,
        seen: Vec<(NodeName, Range<Seq>)>,
    },
    /// The state's first runs of seen ticks, grown.
    Seen(Vec<(NodeName, Range<Seq>)>),
}

/// The reading, wherever it runs.
struct Reader {
    snapshot: Snap,
    log_dir: PathBuf,
    mode: RecoveryMode,
    log: Log,
    /// A paths buffer handed back, for the next batch.
    spare: Vec<Value>,
}

/// Where the reading of the snapshot stands.
enum Snap {
    ToOpen(PathBuf),
    Open(Box<SnapshotReader>),
    Done,
}

/// Where the reading of the log stands.
enum Log {
    /// Not told where to read from yet.
    Waiting,
    Open(Box<LogReader>),
    /// It could not be opened: told as its first part.
    Failed(LogError),
    Done,
}

impl Reader {
    /// The snapshot's next part; `None` once its end (or failure) is told.
    fn snap_part(&mut self) -> Option<Part> {
        if let Snap::ToOpen(path) = &self.snapshot {
            match SnapshotReader::open(path) {
                Ok(r) => self.snapshot = Snap::Open(Box::new(r)),
                Err(e) => {
                    self.snapshot = Snap::Done;
                    return Some(Part::SnapFailed(e));
                }
            }
        }
        let Snap::Open(r) = &mut self.snapshot else {
            return None;
        };
        // The replaying thread counts references to the names of this
        // batch while this one decodes the next.
        r.share_anew();
        let mut paths = std::mem::take(&mut self.spare);
        let mut items = Vec::with_capacity(BATCH);
        while items.len() < BATCH {
            match r.next_ref() {
                Some(Ok(ItemRef::Node(n))) => items.push(SnapItem::Node(n)),
                Some(Ok(ItemRef::Entry(e))) => {
                    let at = paths.len();
                    paths.extend_from_slice(e.path);
                    items.push(SnapItem::Entry {
                        path: at..paths.len(),
                        value: e.value,
                        chain: e.chain,
                        tock: e.tock,
                    });
                }
                Some(Err(e)) => {
                    self.snapshot = Snap::Done;
                    return Some(Part::SnapFailed(e));
                }
                None if items.is_empty() => {
                    let tock = r.header().tock;
                    self.snapshot = Snap::Done;
                    return Some(Part::SnapEnd(tock));
                }
                None => break,
            }
        }
        Some(Part::Snap(SnapBatch {
            paths,
            items,
            read: r.bytes_read(),
            total: r.info().bytes,
        }))
    }

    /// The log's next part; `None` before it is told where to read from,
    /// and once its end (or an error) is told.
    fn log_part(&mut self) -> Option<Part> {
        match std::mem::replace(&mut self.log, Log::Done) {
            Log::Open(mut r) => {
                // The replaying thread counts references to the names and
                // strings of this batch while this one decodes the next.
                r.share_anew();
                let mut recs = Vec::with_capacity(BATCH);
                while recs.len() < BATCH {
                    match r.next() {
                        Some(Ok(rec)) => recs.push(Ok(rec)),
                        Some(Err(e)) => {
                            recs.push(Err(e));
                            return Some(Part::Log(recs));
                        }
                        None if recs.is_empty() => return Some(Part::LogEnd(r)),
                        None => break,
                    }
                }
                self.log = Log::Open(r);
                Some(Part::Log(recs))
            }
            Log::Failed(e) => Some(Part::Log(vec![Err(e)])),
            Log::Waiting => {
                self.log = Log::Waiting;
                None
            }
            Log::Done => None,
        }
    }

    /// Takes what the replay sent back.
    fn back(&mut self, msg: Back) {
        match msg {
            Back::Paths(mut paths) => {
                paths.clear();
                self.spare = paths;
            }
            Back::Spent(spent) => spent.drop_here(),
            Back::ReadLog { from, seen } => {
                self.log = match LogReader::open_with(&self.log_dir, from, self.mode) {
                    Ok(mut log) => {
                        log.leave_out_known_within(&seen);
                        Log::Open(Box::new(log))
                    }
                    Err(e) => Log::Failed(e),
                };
            }
            Back::Seen(runs) => {
                if let Log::Open(log) = &mut self.log {
                    log.leave_out_known_within(&runs);
                }
            }
        }
    }

    /// The reading thread: the snapshot, then, once told, the log.
    fn run(mut self, parts: std::sync::mpsc::SyncSender<Part>, back: Receiver<Back>) {
        loop {
            while let Ok(msg) = back.try_recv() {
                self.back(msg);
            }
            let part = match self.snap_part() {
                Some(p) => p,
                None => match self.log_part() {
                    Some(p) => p,
                    None if matches!(self.log, Log::Waiting) => match back.recv() {
                        Ok(msg) => {
                            self.back(msg);
                            continue;
                        }
                        // The replay is over.
                        Err(_) => return,
                    },
                    None => return,
                },
            };
            let failed = matches!(part, Part::SnapFailed(_));
            // An error from `send`: nobody replays any more.
            if parts.send(part).is_err() || failed {
                return;
            }
        }
    }
}

/// Events a replay is done with, and the values they replaced, gathered
/// in batches for the thread that decoded them to drop: into the heap its
/// next records are decoded into, with no count's cache line passed
/// between the cores.
#[derive(Default)]
pub struct Spent {
    events: Vec<UpdateEvent>,
    values: Vec<Packed>,
}

impl Spent {
    /// Adds `event` and the value it replaced; a batch of `batch` events,
    /// once there is one.
    pub fn push(
        &mut self,
        event: UpdateEvent,
        replaced: Option<Packed>,
        batch: usize,
    ) -> Option<Spent> {
        if self.events.capacity() == 0 {
            self.events.reserve_exact(batch);
            self.values.reserve_exact(batch);
        }
        self.events.push(event);
        self.values.extend(replaced);
        (self.events.len() >= batch).then(|| std::mem::take(self))
    }

    /// Drops the values and the events, each asked for a few drops ahead:
    /// a replaced value was last touched long ago and a spent event on the
    /// other core, and the drop of each begins with a miss.
    pub fn drop_here(self) {
        drop_asking_ahead(self.values, |v| v.view().prefetch());
        drop_asking_ahead(self.events, |e| {
            distkv_model::hint::prefetch(e.path.elements().as_ptr());
        });
    }
}

/// Runs `run(value)` on a new thread named `name`; `Err(value)` if the
/// system gives no thread, for the caller to do the work itself. The value
/// goes over only once the thread runs, so that a thread refused, or gone
/// before it took it, leaves it here.
pub fn spawn_with<T: Send + 'static>(
    name: &str,
    value: T,
    run: impl FnOnce(T) + Send + 'static,
) -> Result<JoinHandle<()>, T> {
    let (give, take) = sync_channel::<T>(1);
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Ok(value) = take.recv() {
                run(value);
            }
        });
    let Ok(thread) = spawned else {
        return Err(value);
    };
    give.send(value).map(|()| thread).map_err(|e| e.0)
}

/// Drops `items` in order, each asked for (`ask`) a few drops ahead.
fn drop_asking_ahead<T>(items: Vec<T>, ask: impl Fn(&T)) {
    const AHEAD: usize = 8;
    let mut items = items.into_iter();
    items.as_slice().iter().take(AHEAD).for_each(&ask);
    while let Some(item) = items.next() {
        if let Some(next) = items.as_slice().get(AHEAD - 1) {
            ask(next);
        }
        drop(item);
    }
}

/// A node's files read on a thread of its own (see the module docs).
pub(crate) struct Ahead {
    way: Way,
    /// The snapshot read, if any.
    snapshot: Option<PathBuf>,
    log_dir: PathBuf,
    /// The log records of the batch being replayed.
    batch: std::vec::IntoIter<Result<LogRecord, LogError>>,
    /// Events the replay is done with, and the values they replaced, for
    /// the reading thread to drop.
    spent: Spent,
    /// The log's reader, once read to its end.
    ended: Option<Box<LogReader>>,
    /// The log's end or an error was given.
    log_over: bool,
}

enum Way {
    /// No thread (the system gave none): read here.
    Here(Box<Reader>),
    There {
        parts: Receiver<Part>,
        back: Sender<Back>,
        thread: Option<JoinHandle<()>>,
    },
}

impl Ahead {
    /// Starts reading the snapshot at `snapshot` (if any) on a thread of
    /// its own ([`Ahead::load_snapshot`]); the log of `log_dir` follows
    /// once asked for ([`Ahead::read_log`]).
    pub(crate) fn start(snapshot: Option<&FsPath>, log_dir: &FsPath, mode: RecoveryMode) -> Ahead {
        Ahead::start_with(snapshot, log_dir, mode, true)
    }

    /// [`Ahead::start`], on the calling thread unless `thread`.
    fn start_with(
        snapshot: Option<&FsPath>,
        log_dir: &FsPath,
        mode: RecoveryMode,
        thread: bool,
    ) -> Ahead {
        let reader = Reader {
            snapshot: snapshot.map_or(Snap::Done, |p| Snap::ToOpen(p.to_path_buf())),
            log_dir: log_dir.to_path_buf(),
            mode,
            log: Log::Waiting,
            spare: Vec::new(),
        };
        let (tx, parts) = sync_channel::<Part>(QUEUED);
        let (back, from_replay) = channel::<Back>();
        let spawned = if thread {
            spawn_with("distkv-start", reader, move |r: Reader| {
                r.run(tx, from_replay)
            })
        } else {
            Err(reader)
        };
        let way = match spawned {
            Ok(thread) => Way::There {
                parts,
                back,
                thread: Some(thread),
            },
            Err(reader) => Way::Here(Box::new(reader)),
        };
        Ahead {
            way,
            snapshot: snapshot.map(FsPath::to_path_buf),
            log_dir: log_dir.to_path_buf(),
            batch: Vec::new().into_iter(),
            spent: Spent::default(),
            ended: None,
            log_over: false,
        }
    }

    /// The next part read; `None` if the reading ended without telling
    /// its end (a panic of the reading thread is resumed here).
    fn next_part(&mut self) -> Option<Part> {
        match &mut self.way {
            Way::Here(r) => r.snap_part().or_else(|| r.log_part()),
            Way::There { parts, thread, .. } => match parts.recv() {
                Ok(part) => Some(part),
                Err(_) => {
                    if let Some(Err(panic)) = thread.take().map(JoinHandle::join) {
                        std::panic::resume_unwind(panic);
                    }
                    None
                }
            },
        }
    }

    /// Sends `msg` to the reader.
    fn tell(&mut self, msg: Back) {
        match &mut self.way {
            Way::Here(r) => r.back(msg),
            // A thread that has ended needs nothing more.
            Way::There { back, .. } => {
                let _ = back.send(msg);
            }
        }
    }

    /// Loads the snapshot into a new state for node `me`, as
    /// [`snap::load`] does, calling `progress(bytes_read, file_bytes)` as
    /// it goes. Fails without a partial result if the file is damaged
    /// anywhere.
    pub(crate) fn load_snapshot(
        &mut self,
        me: &str,
        limits: LogLimits,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<State, SnapshotError> {
        let Some(path) = self.snapshot.clone() else {
            return Ok(State::new(me, limits));
        };
        let mut st = State::new(me, limits);
        st.begin_in_order_restore();
        let mut seen = SeenBatch::default();
        let tock = loop {
            match self.next_part() {
                Some(Part::Snap(b)) => {
                    for item in b.items {
                        let item = match item {
                            SnapItem::Node(n) => ItemRef::Node(n),
                            SnapItem::Entry {
                                path,
                                value,
                                chain,
                                tock,
                            } => ItemRef::Entry(EntryRef {
                                path: &b.paths[path],
                                value,
                                encoded: None,
                                chain,
                                tock,
                            }),
                        };
                        snap::restore_item(&mut st, item, &mut seen);
                    }
                    self.tell(Back::Paths(b.paths));
                    progress(b.read, b.total);
                }
                Some(Part::SnapEnd(tock)) => break tock,
                Some(Part::SnapFailed(e)) => return Err(e),
                Some(Part::Log(_) | Part::LogEnd(_)) | None => {
                    return Err(SnapshotError::Io {
                        file: path,
                        source: std::io::Error::other("the reading thread ended early"),
                    })
                }
            }
        };
        st.finish_restore(seen);
        snap::end_load(st, &path, me, limits, tock)
    }

    /// Reads the log from `from` on, leaving out of its state records the
    /// ticks of `seen`, the replayed state's first runs of seen ticks
    /// ([`LogReader::leave_out_known_within`]).
    pub(crate) fn read_log(&mut self, from: Seq, seen: Vec<(NodeName, Range<Seq>)>) {
        self.tell(Back::ReadLog { from, seen });
    }

    /// The next log record; `None` at the log's end
    /// ([`Ahead::log_reader`] then has what the reading found).
    /// After an error, `None`.
    pub(crate) fn next_record(&mut self) -> Option<Result<LogRecord, LogError>> {
        loop {
            if let Some(rec) = self.batch.next() {
                self.log_over = rec.is_err();
                return Some(rec);
            }
            if self.log_over {
                return None;
            }
            match self.next_part() {
                Some(Part::Log(recs)) => self.batch = recs.into_iter(),
                Some(Part::LogEnd(r)) => {
                    self.ended = Some(r);
                    self.log_over = true;
                }
                // Only the log's parts follow the snapshot's.
                Some(Part::Snap(_) | Part::SnapEnd(_) | Part::SnapFailed(_)) | None => {
                    self.log_over = true;
                    return Some(Err(LogError::Io {
                        file: self.log_dir.clone(),
                        source: std::io::Error::other("the reading thread ended early"),
                    }));
                }
            }
        }
    }

    /// The log's reader, once [`Ahead::next_record`] has given its end.
    pub(crate) fn log_reader(&mut self) -> Option<&mut LogReader> {
        self.ended.as_deref_mut()
    }

    /// Tells the reader the replayed state's first runs of seen ticks,
    /// grown since: its state records leave them out from its next batch
    /// on, which is never more than the state has seen when they come.
    pub(crate) fn seen(&mut self, runs: Vec<(NodeName, Range<Seq>)>) {
        self.tell(Back::Seen(runs));
    }

    /// Takes back an event the replay is done with, and the value it
    /// replaced, to be dropped on the reading thread with the next
    /// [`BATCH`] (here at once, when read here).
    pub(crate) fn spent(&mut self, event: UpdateEvent, replaced: Option<Packed>) {
        if matches!(self.way, Way::Here(_)) {
            return;
        }
        if let Some(batch) = self.spent.push(event, replaced, BATCH) {
            self.tell(Back::Spent(batch));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::recover::testing::{books, scattered_log};
    use distkv_model::path;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("distkv-ahead-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("log")).expect("temp dir");
        d
    }

    /// A state of `n` keys, each changed by node `n0`.
    fn states(n: i64) -> State {
        let mut st = State::new("n0", LogLimits::default());
        st.make_ready();
        for i in 0..n {
            st.local_change(&path!["k", i % 7, i], Some(Value::Int(i)))
                .expect("a change");
        }
        st
    }

    /// Every record `ahead` reads from `from` on, as text, and its end.
    fn read_all(ahead: &mut Ahead, from: Seq) -> (Vec<String>, Option<Seq>) {
        ahead.read_log(from, Vec::new());
        let mut recs = Vec::new();
        while let Some(r) = ahead.next_record() {
            match r {
                Ok(LogRecord::Event { seq, event, .. }) => {
                    recs.push(format!("{seq} {event:?}"));
                    ahead.spent(event, None);
                }
                Ok(rec) => recs.push(format!("{rec:?}")),
                Err(e) => recs.push(format!("error {e}")),
            }
        }
        (recs, ahead.log_reader().and_then(|r| r.next_seq()))
    }

    /// Read on a thread or here, a snapshot loads into the state
    /// `snap::load` builds, and the log reads as a [`LogReader`] reads it,
    /// in batches and across them; a state record's sets leave out the
    /// runs told.
    #[test]
    fn reading_ahead_loads_and_reads_what_reading_here_does(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tmp("same");
        scattered_log(&dir.join("log"), 3_000, &[1_000, 2_500], (0, 0))?;
        // A snapshot of several batches (not the log's state: each part is
        // compared with its own reading here).
        let snap_file = dir.join("s.dkvsnap");
        snap::write(&states(5_000), &snap_file, true, 0, 5_000)?.finish()?;
        let (loaded, _) = snap::load(&snap_file, "n0", LogLimits::default())?;

        let mut direct = Vec::new();
        let mut r = LogReader::open_with(&dir.join("log"), 700, RecoveryMode::TruncateTail)?;
        for rec in r.by_ref() {
            direct.push(match rec? {
                LogRecord::Event { seq, event, .. } => format!("{seq} {event:?}"),
                rec => format!("{rec:?}"),
            });
        }
        assert_eq!(direct.len(), 2_303);

        for thread in [true, false] {
            let mut ahead = Ahead::start_with(
                Some(&snap_file),
                &dir.join("log"),
                RecoveryMode::TruncateTail,
                thread,
            );
            let st = ahead.load_snapshot("n0", LogLimits::default(), &mut |_, _| {})?;
            assert_eq!(st.digest(), loaded.digest(), "thread: {thread}");
            assert_eq!(books(&st), books(&loaded));
            assert_eq!(st.tock().peek(), loaded.tock().peek());
            let (recs, end) = read_all(&mut ahead, 700);
            assert_eq!(recs, direct, "thread: {thread}");
            assert_eq!(end, Some(3_001));
        }
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }

    /// A snapshot that cannot be read, or whose read fails half-way, is an
    /// error of the load, never a partial state; a log that cannot be
    /// opened is an error of its first record.
    #[test]
    fn damage_is_told_where_it_is_met() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tmp("damage");
        let file = dir.join("s.dkvsnap");
        snap::write(&states(20_000), &file, true, 0, 20_000)?.finish()?;
        let whole = std::fs::read(&file)?;
        for thread in [true, false] {
            // Cut short: the blocks before the cut are read, then the error.
            std::fs::write(&file, &whole[..whole.len() * 2 / 3])?;
            let mut ahead = Ahead::start_with(Some(&file), &dir, RecoveryMode::Strict, thread);
            let e = ahead.load_snapshot("n0", LogLimits::default(), &mut |_, _| {});
            assert!(
                matches!(e, Err(SnapshotError::Truncated { .. })),
                "{thread}: {e:?}"
            );
            // Not a snapshot at all.
            std::fs::write(&file, b"not a snapshot")?;
            let mut ahead = Ahead::start_with(Some(&file), &dir, RecoveryMode::Strict, thread);
            assert!(ahead
                .load_snapshot("n0", LogLimits::default(), &mut |_, _| {})
                .is_err());
            // No snapshot; the log's directory is a file.
            let log = dir.join("not-a-dir");
            std::fs::write(&log, b"")?;
            let mut ahead = Ahead::start_with(None, &log, RecoveryMode::Strict, thread);
            let st = ahead.load_snapshot("n0", LogLimits::default(), &mut |_, _| {})?;
            assert_eq!(st.digest(), State::new("n0", LogLimits::default()).digest());
            let (recs, end) = read_all(&mut ahead, 1);
            assert_eq!(recs.len(), 1, "{recs:?}");
            assert!(recs[0].starts_with("error"), "{recs:?}");
            assert_eq!(end, None);
        }
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }
}
