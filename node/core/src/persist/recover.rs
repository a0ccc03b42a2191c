//! Recovery of a data directory at start.
//!
//! Layout of a data directory:
//! * `lock` — held by the node running on it ([`super::lock`]),
//! * `meta` — identity and tick reservation ([`super::meta`]),
//! * `log/` — event-log segments (`distkv_log`),
//! * `snap/<seq>.dkvsnap` — snapshots; `seq` is the log position covered,
//! * `index/` — the history index, derived from `log/` (never read here).
//!
//! **Recovery** locks the directory, loads the newest snapshot that reads
//! cleanly, replays every log record after it through the same
//! [`State::apply`] as at run time, then opens the log writer with what the
//! replay found in the newest segment (cutting a torn tail off it, after
//! keeping the cut bytes in `log/damaged/`; each segment is read once), and
//! resumes the node's own tick above its durable reservation, so a crashed
//! node never reuses a tick. Damage
//! in the log that valid blocks follow is not a torn tail: the node refuses
//! to start ([`PersistError::Damaged`]), unless `recovery` is `salvage`,
//! which keeps every valid block (the segments are rewritten, the damaged
//! files kept) and logs an error naming what was lost. The events lost are
//! then missing here: their ticks are missing in the state, which the
//! cluster asks the other nodes for (see [`recover`]).
//!
//! What recovery returns ([`Recovered`]) holds the open log writer, the
//! metadata and the lock; the node's writer thread takes them over.

use std::path::{Path as FsPath, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use distkv_log::reader::SegmentScan;
use distkv_log::writer::{FsyncPolicy, LogWriter, Now, RecoveryMode, WriterConfig};
use distkv_log::{
    finish_rotations, list_segments, salvage_segment, LogError, LogLimits, LogRecord,
    RetentionPolicy, SalvageReport, Seq, Unfinished, DAMAGED_DIR,
};
use distkv_model::{RangeSet, UpdateEvent};
use distkv_snapshot::SnapshotError;

use super::ahead::Ahead;
use super::lock::{DirLock, Holder};
use super::meta::{Meta, MetaError, RESERVE_AHEAD};
use crate::state::{Lookahead, State};

/// How a data directory is kept.
#[derive(Debug, Clone)]
pub struct DurableConfig {
    /// The data directory.
    pub dir: PathBuf,
    /// When log commits are fsynced.
    pub fsync: FsyncPolicy,
    /// Rotate segments at this size.
    pub segment_bytes: u64,
    /// Rotate segments at this age.
    pub segment_age: Duration,
    /// Take a snapshot after this many events…
    pub snapshot_records: u64,
    /// …or after this long with changes.
    pub snapshot_interval: Duration,
    /// Write a state record after this many events…
    pub state_records: u64,
    /// …or after this long with changes.
    pub state_interval: Duration,
    /// Which old segments to delete.
    pub retention: RetentionPolicy,
    /// What to do with a damaged event log.
    pub recovery: RecoveryMode,
    /// Changes — local ones, `update`, and events from other nodes — are
    /// refused while more than this many events wait for the disk
    /// (back-pressure instead of unbounded memory)…
    pub max_backlog: usize,
    /// …or more than this many (approximate) bytes of them.
    pub max_backlog_bytes: usize,
    /// Asked to stop while the history cannot be written, the writer keeps
    /// trying this long before it gives up and reports what is lost.
    pub stop_retry: Duration,
    /// Keep the history index (`index/`, crate `distkv-index`) current on
    /// a thread of its own, fed by the writer thread without waiting
    /// (`server.persist.history_index`, on by default; docs/perf.md,
    /// "History index").
    pub history_index: bool,
}

impl DurableConfig {
    /// Defaults for a data directory `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> DurableConfig {
        DurableConfig {
            dir: dir.into(),
            fsync: FsyncPolicy::default(),
            segment_bytes: 64 << 20,
            segment_age: Duration::from_secs(3600),
            snapshot_records: 1_000_000,
            snapshot_interval: Duration::from_secs(600),
            state_records: 100_000,
            state_interval: Duration::from_secs(60),
            retention: RetentionPolicy {
                max_age: Some(Duration::from_secs(7 * 24 * 3600)),
                max_total_bytes: Some(10 << 30),
            },
            recovery: RecoveryMode::TruncateTail,
            max_backlog: 1 << 20,
            max_backlog_bytes: 64 << 20,
            stop_retry: Duration::from_secs(5),
            history_index: true,
        }
    }

    /// The event-log directory.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// The history index directory (derived from the log; see
    /// `distkv-index`).
    pub fn index_dir(&self) -> PathBuf {
        self.dir.join("index")
    }

    /// The snapshot directory.
    pub fn snap_dir(&self) -> PathBuf {
        self.dir.join("snap")
    }
}

/// A data-directory problem.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The in-memory log no longer holds events the writer has not
    /// written: they cannot be written any more (not retried).
    #[error("in-memory log dropped records the writer had not written ({0})")]
    Dropped(distkv_log::Lagged),
    /// Metadata.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// Event-log segments.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Snapshots.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// Another process holds the data directory: start nothing on it.
    #[error("data directory {dir} is in use by {holder}")]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// Who holds it.
        holder: Holder,
    },
    /// The event log is damaged and valid blocks follow the damage: not a
    /// torn tail. Nothing was changed; the node does not start.
    #[error(
        "damage in the event log with valid blocks after it, which no crash explains; start \
         the node with server.persist.recovery=salvage (e.g. -C \
         server.persist.recovery=salvage) to keep every valid block after the damage: the \
         damaged file is kept in {}, the events of the damaged blocks are lost on this node \
         (other nodes that hold them send them back)",
        kept_in.display()
    )]
    Damaged {
        /// What is damaged, where.
        #[source]
        damage: LogError,
        /// Where a salvage keeps the damaged file.
        kept_in: PathBuf,
    },
    /// Other file-system trouble.
    #[error("{file}: {source}")]
    Io {
        /// The file or directory.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What recovery found.
#[derive(Debug, Clone, Default)]
pub struct RecoveryInfo {
    /// The snapshot recovery started from.
    pub snapshot: Option<PathBuf>,
    /// Snapshots that could not be read (skipped), with why.
    pub bad_snapshots: Vec<(PathBuf, String)>,
    /// Log events replayed on top of it.
    pub events: u64,
    /// Log state records replayed.
    pub states: u64,
    /// Bytes cut off a torn log tail.
    pub torn_bytes: u64,
    /// Where those bytes were kept.
    pub torn_kept: Option<PathBuf>,
    /// Segments salvaged (`recovery: salvage`).
    pub salvaged: Vec<SalvageReport>,
    /// Events the log replayed says were lost to damage (by a salvage now
    /// or earlier).
    pub lost_events: u64,
    /// Lost records the replay met (each is one damaged place): the
    /// events `from ..= seq` and why they were lost.
    pub lost: Vec<(Seq, Seq, String)>,
    /// The own tick the node resumes at.
    pub tick: Option<u64>,
    /// Own ticks declared never used ([`resume_above_reservation`]).
    pub skipped: RangeSet,
    /// The newest log segment as the replay read it to its end (`None` if
    /// it did not, or skipped damage in it): the log writer opens the
    /// directory with it instead of reading that segment again.
    pub newest_segment: Option<SegmentScan>,
}

/// A recovered data directory, ready to serve from.
pub struct Recovered {
    /// The state, as the files say.
    pub state: State,
    /// What recovery did.
    pub info: RecoveryInfo,
    writer: LogWriter,
    meta: Meta,
    config: DurableConfig,
    lock: DirLock,
}

fn io(file: &FsPath) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io {
        file: file.to_path_buf(),
        source,
    }
}

/// Snapshot files of `dir`, newest first, with their positions.
pub fn list_snapshots(dir: &FsPath) -> Result<Vec<(Seq, PathBuf)>, PersistError> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(dir)(e)),
    };
    for ent in rd {
        let ent = ent.map_err(io(dir))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = name
            .strip_suffix(".dkvsnap")
            .and_then(|s| s.parse::<Seq>().ok())
        {
            out.push((seq, ent.path()));
        }
    }
    out.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    Ok(out)
}

/// Removes snapshot temp files a crash left behind (a snapshot only counts
/// once renamed into place).
pub fn remove_stale_temp_files(dir: &FsPath) -> Result<(), PersistError> {
    for ent in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = ent.map_err(io(dir))?.path();
        if path.extension().is_some_and(|e| e == "tmp") {
            tracing::info!(file = %path.display(), "removing an unfinished snapshot");
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// Never reuse a tick: after an unclean stop the node's own tick resumes at
/// its durable reservation. The ticks between its last logged change and
/// the reservation were never given to anybody — a change is broadcast
/// only once it is written to the log, so a process crash cannot lose a
/// change that others hold — and are declared never used
/// ([`State::skip_own_ticks`]): recorded in the log's next state record and
/// told to the other nodes. Returns them (empty after a clean stop, which
/// shrinks the reservation to the tick reached).
///
/// Only a lost write of the operating system (power failure under
/// `fsync: interval` or `never`) can lose a change that was broadcast; the
/// others then hold it, and send it back when they hear of the skip.
pub fn resume_above_reservation(state: &mut State, reserved_tick: u64) -> RangeSet {
    let last = state.tick().unwrap_or(0);
    let mut skipped = RangeSet::new();
    if last < reserved_tick {
        state.resume_tick_at(reserved_tick);
        skipped.insert_range(last + 1, reserved_tick + 1);
        state.skip_own_ticks(&skipped);
    }
    skipped
}

/// As [`resume_above_reservation`], for a log that lost events to damage:
/// it may have held own changes above the last one it still has, broadcast
/// long ago, so nothing is declared unused. The ticks up to the
/// reservation are missing instead: the other nodes are asked for them,
/// and those nobody holds are declared unused after a grace period (the
/// cluster's `own_gap_grace`).
pub fn resume_after_loss(state: &mut State, reserved_tick: u64) {
    if state.tick().unwrap_or(0) < reserved_tick {
        state.resume_tick_at(reserved_tick);
    }
}

/// A monotonic clock in ms since the first call in this process: what
/// the node's writer thread reads unless its host brings its own.
pub fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The file name of the snapshot covering `seq`.
pub fn snapshot_name(seq: Seq) -> String {
    format!("{seq:020}.dkvsnap")
}

/// Salvages the closed segments of `log_dir` that hold records from
/// `from_seq` on (the newest one is the writer's).
fn salvage_closed(
    log_dir: &FsPath,
    wc: &WriterConfig,
    from_seq: Seq,
    now: Now,
) -> Result<Vec<SalvageReport>, PersistError> {
    let segments = list_segments(log_dir)?;
    let mut out = Vec::new();
    for pair in segments.windows(2) {
        let (seg, next) = (&pair[0], &pair[1]);
        if next.first_seq <= from_seq {
            continue;
        }
        let end = Some(next.first_seq);
        if let Some(r) = salvage_segment(log_dir, &seg.path, wc, end, now.wall_ms)? {
            out.push(r);
        }
    }
    Ok(out)
}

/// Logs what a salvage kept and lost, as an error: history was lost.
fn log_salvage(r: &SalvageReport) {
    for s in &r.skipped {
        let lost = match &s.lost {
            None => "nothing (the damaged block was found whole)".to_string(),
            Some(l) if l.is_empty() => "a block without events".to_string(),
            Some(l) => format!("events {} to {}", l.start, l.end - 1),
        };
        tracing::error!(
            file = %r.file.display(),
            offset = s.offset,
            resumed_at = s.resumed_at,
            reason = %s.reason,
            %lost,
            kept = %r.kept.display(),
            "event log salvaged: damage skipped, every valid block after it kept; the lost \
             events' ticks are missing here and will be asked of the other nodes"
        );
    }
}

/// Opens (or creates) the data directory of node `me`, locks it (see
/// [`super::lock`]; another process holding it fails this with
/// [`PersistError::Locked`] before anything is read or written) and
/// rebuilds its state; `now_ms` is the wall clock, intervals start on
/// [`monotonic_ms`].
pub fn recover(
    me: &str,
    config: DurableConfig,
    limits: LogLimits,
    now_ms: u64,
) -> Result<Recovered, PersistError> {
    let now = Now {
        wall_ms: now_ms,
        mono_ms: monotonic_ms(),
    };
    recover_at(me, config, limits, now)
}

/// As [`recover`], at `now` on both clocks (those the node's writer
/// thread will run with).
///
/// With `recovery: salvage`, every segment the replay reads is salvaged
/// first if damage with valid blocks after it is found in it (the newest
/// one when the writer opens it, older ones here). Whatever a salvage
/// lost is logged as an error; in the state its events are simply absent,
/// so their ticks are missing, which the cluster asks the other nodes for
/// ([`resume_after_loss`] declares no own tick unused then).
pub fn recover_at(
    me: &str,
    config: DurableConfig,
    limits: LogLimits,
    now: Now,
) -> Result<Recovered, PersistError> {
    std::fs::create_dir_all(&config.dir).map_err(io(&config.dir))?;
    let lock = DirLock::exclusive(&config.dir)?;
    for d in [config.log_dir(), config.snap_dir()] {
        std::fs::create_dir_all(&d).map_err(io(&d))?;
    }
    let mut meta = Meta::open(&config.dir, me)?;
    let mut wc = WriterConfig::new(me);
    wc.fsync = config.fsync;
    // A slow disk's fsync holds back no append (`fsync: interval`).
    wc.sync_in_background = true;
    wc.max_segment_bytes = config.segment_bytes;
    wc.max_segment_age = config.segment_age;
    wc.recovery = config.recovery;
    let damaged = |e: LogError| match e {
        e @ LogError::Salvageable { .. } => PersistError::Damaged {
            damage: e,
            kept_in: config.log_dir().join(DAMAGED_DIR),
        },
        e => PersistError::Log(e),
    };
    // A salvage rewrites the newest segment, so the writer recovers it
    // before the replay reads it. Otherwise the replay reads it first (in
    // the same mode) and the writer takes over what it found: each segment
    // is read once.
    let salvage = config.recovery == RecoveryMode::Salvage;
    // A rotation a crash interrupted is finished (or its segment kept
    // aside) before anything reads the log.
    for r in finish_rotations(&config.log_dir(), &wc, now.wall_ms)? {
        let pending = r.pending.display();
        match r.outcome {
            Unfinished::Named(at) => tracing::warn!(
                %pending,
                now_at = %at.display(),
                "found a log rotation a stop interrupted: named its segment"
            ),
            Unfinished::KeptAside(at) => tracing::warn!(
                %pending,
                now_at = %at.display(),
                "found a log rotation a stop interrupted: kept its segment aside (the one before \
                 is not whole)"
            ),
            Unfinished::Removed => tracing::warn!(
                %pending,
                "found a log rotation a stop interrupted: removed its segment, empty (the stop \
                 came before its header)"
            ),
        }
    }
    let early = if salvage {
        Some(LogWriter::open(config.log_dir(), wc.clone(), now).map_err(damaged)?)
    } else {
        None
    };
    remove_stale_temp_files(&config.snap_dir())?;
    let mut hooks = NodeStart {
        log_dir: config.log_dir(),
        wc: &wc,
        now,
        salvage,
        salvaged: Vec::new(),
        damaged: &damaged,
    };
    let files = Files {
        dir: &config.dir,
        me,
        reserved_tick: meta.reserved_tick,
        log_end: early.as_ref().map(LogWriter::next_seq),
        limits,
        mode: config.recovery,
    };
    let mut info = RecoveryInfo::default();
    let mut state = rebuild(&files, &mut hooks, &mut info)?;
    let writer = match early {
        Some(w) => w,
        None => {
            let scan = info.newest_segment.take();
            LogWriter::open_with_scan(config.log_dir(), wc.clone(), now, scan).map_err(damaged)?
        }
    };
    let report = writer.recovery();
    info.torn_bytes = report.dropped_bytes;
    info.torn_kept = report.kept.clone();
    info.salvaged = report.salvaged.iter().cloned().collect();
    if let (Some((offset, why)), Some(file)) = (&report.damage, &report.segment) {
        tracing::warn!(
            file = %file.display(),
            offset,
            bytes = report.dropped_bytes,
            kept = ?report.kept,
            %why,
            "torn log tail cut off (a write a crash interrupted)"
        );
    }
    for r in &info.salvaged {
        log_salvage(r);
    }
    info.salvaged.extend(hooks.salvaged);
    let tick = state.tick().unwrap_or(0);
    meta.reserve(&config.dir, tick + 2 * RESERVE_AHEAD)?;
    state.set_tick_limit(Some(meta.reserved_tick));
    if state.tick().is_some_and(|t| t > 0) {
        info.tick = state.tick();
    }
    Ok(Recovered {
        state,
        info,
        writer,
        meta,
        config,
        lock,
    })
}

/// What a caller of [`rebuild`] adds to it: what happens before the log
/// is replayed, and progress.
pub trait RebuildHooks {
    /// Loading the snapshot at `path` has read `read` of its `total`
    /// bytes (told as its blocks are read).
    fn loading(&mut self, _path: &FsPath, _read: u64, _total: u64) {}

    /// The start point is chosen: the log is replayed from `from` up to
    /// `end` (exclusive; `None`: its end is not known yet) next. The node
    /// salvages damaged closed segments here (`recovery: salvage`).
    fn before_replay(&mut self, _from: Seq, _end: Option<Seq>) -> Result<(), PersistError> {
        Ok(())
    }

    /// Maps an error met while reading the log (the node names the place
    /// a salvage would keep a damaged file).
    fn log_error(&self, e: LogError) -> PersistError {
        PersistError::Log(e)
    }

    /// The log record at `seq` was replayed.
    fn replayed(&mut self, _seq: Seq) {}
}

/// Events of the log replayed as one run ([`replay_run`]).
const RUN: usize = 256;

/// The state's first runs of seen ticks go to the log's reader after
/// this many runs ([`Ahead::seen`]).
const RUNS_PER_SEEN: u32 = 4;

/// Replays the events of `run` (emptying it), each looked ahead of
/// ([`Lookahead`]) and handed back to `ahead` after; the number stored.
fn replay_run(state: &mut State, run: &mut Vec<UpdateEvent>, ahead: &mut Ahead) -> u64 {
    let mut look = Lookahead::default();
    let mut stored = 0;
    let mut events = run.drain(..);
    while let Some(mut event) = events.next() {
        look.step(state, events.as_slice());
        let value = event.value.take();
        let old = match state.replay_swap(&event, value) {
            Ok(old) => {
                stored += 1;
                old
            }
            Err(_) => None,
        };
        ahead.spent(event, old);
    }
    stored
}

/// What [`rebuild`] reads.
#[derive(Debug, Clone, Copy)]
pub struct Files<'a> {
    /// The data directory.
    pub dir: &'a FsPath,
    /// Its node.
    pub me: &'a str,
    /// The durable tick reservation (`meta`).
    pub reserved_tick: u64,
    /// The log's end: its next position once a torn tail is cut (`None`:
    /// not known yet; the replay finds it, reading the newest segment).
    pub log_end: Option<Seq>,
    /// Limits of the state.
    pub limits: LogLimits,
    /// How the log is read.
    pub mode: RecoveryMode,
}

/// Rebuilds node `me`'s state from the files of data directory `dir`
/// whose log ends before `log_end`, reading the log in `mode`: the newest
/// snapshot that reads cleanly and that the log continues, every log
/// record after it through [`State::replay`], and the own tick resumed
/// above `reserved_tick` ([`resume_above_reservation`], or
/// [`resume_after_loss`] when the log holds lost records). `info` learns
/// what was used, skipped and lost, and how the newest segment read.
///
/// This is recovery's one way from files to a state: the node's start
/// ([`recover`]) and the read-only tools (`distkv-replay`) both use it,
/// so they rebuild the same state from the same files. It writes nothing;
/// the node opens its log writer (which cuts a torn tail) after it, with
/// what the replay found in the newest segment, and reserves ticks then.
///
/// With `log_end` unknown, the replay starts from the newest snapshot that
/// reads cleanly and learns the log's end as it reads: should the log end
/// before that snapshot's position (the log lost its tail, the snapshot
/// not), the rebuild starts over, knowing the end, from an older snapshot
/// — as if the end had been known from the start.
pub fn rebuild(
    files: &Files<'_>,
    hooks: &mut dyn RebuildHooks,
    info: &mut RecoveryInfo,
) -> Result<State, PersistError> {
    let mut log_end = files.log_end;
    loop {
        match replay_files(files, log_end, hooks, info)? {
            Replayed::State(state) => return Ok(*state),
            Replayed::BeyondEnd(end) => {
                // The bad snapshot is skipped (and noted) by the next round.
                let bad = std::mem::take(&mut info.bad_snapshots);
                *info = RecoveryInfo {
                    bad_snapshots: bad,
                    ..RecoveryInfo::default()
                };
                log_end = Some(end);
            }
        }
    }
}

/// What one round of [`rebuild`] came to.
enum Replayed {
    /// The rebuilt state.
    State(Box<State>),
    /// The log ends at this position, before the chosen snapshot's.
    BeyondEnd(Seq),
}

/// One round of [`rebuild`], with the log's end as known so far.
fn replay_files(
    files: &Files<'_>,
    log_end: Option<Seq>,
    hooks: &mut dyn RebuildHooks,
    info: &mut RecoveryInfo,
) -> Result<Replayed, PersistError> {
    let Files {
        dir,
        me,
        reserved_tick,
        limits,
        mode,
        ..
    } = *files;
    let log_dir = dir.join("log");
    // The snapshot and the log are read on a thread of their own, ahead
    // of this one's replay ([`Ahead`]).
    let mut start: Option<(State, Seq, Ahead)> = None;
    for (seq, path) in list_snapshots(&dir.join("snap"))? {
        if let Some(end) = log_end.filter(|&end| seq >= end) {
            info.bad_snapshots.push((
                path,
                format!("covers position {seq}, beyond the log's end {end}"),
            ));
            continue;
        }
        let mut ahead = Ahead::start(Some(&path), &log_dir, mode);
        match ahead.load_snapshot(me, limits, &mut |read, total| {
            hooks.loading(&path, read, total);
        }) {
            Ok(st) => {
                info.snapshot = Some(path);
                start = Some((st, seq, ahead));
                break;
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "skipping unreadable snapshot");
                info.bad_snapshots.push((path, e.to_string()));
            }
        }
    }
    let (mut state, covered, mut ahead) = start.unwrap_or_else(|| {
        (
            State::new(me, limits),
            0,
            Ahead::start(None, &log_dir, mode),
        )
    });

    hooks.before_replay(covered + 1, log_end)?;
    // A directory without segments: the writer starts the log at 1.
    let mut end = 1;
    if log_dir.is_dir() {
        // The ticks of a state record's sets of superseded ones that the
        // state has seen add nothing to it: the reader leaves them out, as
        // far as the state has got (it only sees more ticks as it goes).
        ahead.read_log(covered + 1, state.seen_first_runs());
        // Events are replayed in runs, each looked ahead of.
        let mut run = Vec::with_capacity(RUN);
        let mut runs = 0;
        while let Some(rec) = ahead.next_record() {
            let rec = rec.map_err(|e| hooks.log_error(e))?;
            hooks.replayed(rec.seq());
            match rec {
                LogRecord::Event { event, .. } => {
                    run.push(event);
                    if run.len() == RUN {
                        info.events += replay_run(&mut state, &mut run, &mut ahead);
                        runs += 1;
                        if runs % RUNS_PER_SEEN == 0 {
                            ahead.seen(state.seen_first_runs());
                        }
                    }
                }
                LogRecord::State {
                    nodes,
                    known,
                    deleted,
                    ..
                } => {
                    info.events += replay_run(&mut state, &mut run, &mut ahead);
                    state.restore_state(nodes.iter().map(|(n, t)| (&**n, *t)), &known, &deleted);
                    ahead.seen(state.seen_first_runs());
                    info.states += 1;
                }
                LogRecord::Lost { from, seq, why, .. } => {
                    info.lost_events += (seq + 1).saturating_sub(from);
                    info.lost.push((from, seq, why.to_string()));
                }
            }
        }
        info.events += replay_run(&mut state, &mut run, &mut ahead);
        if let Some(reader) = ahead.log_reader() {
            end = reader.next_seq().unwrap_or(end);
            info.newest_segment = reader.take_newest_scan();
        }
    }
    if log_end.is_none() && covered >= end {
        return Ok(Replayed::BeyondEnd(end));
    }

    if info.lost.is_empty() {
        info.skipped = resume_above_reservation(&mut state, reserved_tick);
    } else {
        resume_after_loss(&mut state, reserved_tick);
    }
    Ok(Replayed::State(Box::new(state)))
}

/// The node's start: salvages damaged closed segments before the replay
/// (`recovery: salvage`) and names where damaged files are kept.
struct NodeStart<'a, F> {
    log_dir: PathBuf,
    wc: &'a WriterConfig,
    now: Now,
    salvage: bool,
    /// Closed segments salvaged.
    salvaged: Vec<SalvageReport>,
    damaged: &'a F,
}

impl<F: Fn(LogError) -> PersistError> RebuildHooks for NodeStart<'_, F> {
    fn before_replay(&mut self, from: Seq, _end: Option<Seq>) -> Result<(), PersistError> {
        if self.salvage {
            for r in salvage_closed(&self.log_dir, self.wc, from, self.now)? {
                log_salvage(&r);
                self.salvaged.push(r);
            }
        }
        Ok(())
    }

    fn log_error(&self, e: LogError) -> PersistError {
        (self.damaged)(e)
    }
}

/// The parts of [`Recovered`] the writer thread takes over.
pub struct RecoveredWriter {
    /// The open log writer, positioned after the last record.
    pub writer: LogWriter,
    /// The directory's metadata.
    pub meta: Meta,
    /// How the directory is kept.
    pub config: DurableConfig,
    /// The in-memory log's next position (pinned from there on).
    pub mem_next: Seq,
    /// Own ticks declared never used at this start.
    pub skipped: RangeSet,
    /// The directory's lock.
    pub lock: DirLock,
}

impl Recovered {
    /// Splits into the state (for the server) and the writer's part.
    pub fn split(self) -> (State, RecoveryInfo, RecoveredWriter) {
        let mut state = self.state;
        let mem_next = state.log().next_seq();
        state.log_mut().pin(Some(mem_next));
        let skipped = self.info.skipped.clone();
        (
            state,
            self.info,
            RecoveredWriter {
                writer: self.writer,
                meta: self.meta,
                config: self.config,
                mem_next,
                skipped,
                lock: self.lock,
            },
        )
    }
}

/// What the tests of a rebuild (here and in the replay tools) share.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use super::*;
    use distkv_model::{path, Chain, NodeName, NodeSet, Value};

    /// Each node's bookkeeping as one comparable value: tick, superseded,
    /// missing and deleted ticks.
    pub fn books(st: &State) -> Vec<String> {
        st.nodes()
            .map(|(n, i)| {
                format!(
                    "{n}: tick {:?} superseded {} missing {} deleted {}",
                    i.tick(),
                    i.superseded(),
                    i.missing(),
                    i.deleted()
                )
            })
            .collect()
    }

    /// Writes node `n0`'s log into `dir`: `events` changes by node `n1` to
    /// 300 keys in a scrambled order (each key's last write falls anywhere,
    /// and the superseded ticks are scattered), and after the events
    /// numbered in `records_at` a state record of what `n1` has then seen,
    /// with a node `n2` no event names (ticks 5 to 8); the record after
    /// event `beyond_at` also claims ticks `beyond` and `beyond + 1`, which
    /// no event shows. Returns the state a replay of every record whole comes
    /// to, and the records' sets of superseded ticks as written.
    pub fn scattered_log(
        dir: &FsPath,
        events: u64,
        records_at: &[u64],
        (beyond_at, beyond): (u64, u64),
    ) -> Result<(State, Vec<NodeSet>), PersistError> {
        let mut cfg = WriterConfig::new("n0");
        cfg.fsync = FsyncPolicy::Never;
        let mut w = LogWriter::open(dir, cfg, Now::at(1))?;
        let mut want = State::new("n0", LogLimits::default());
        let n1 = NodeName::from("n1");
        let mut written = Vec::new();
        for t in 1..=events {
            let ev = UpdateEvent {
                path: path!["k", ((t * 2_654_435_761) >> 7) % 300],
                chain: Chain::single(n1.clone(), t),
                value: (t % 17 != 0).then_some(Value::Int(t as i64)),
                tock: t,
            };
            w.append_event(t, &ev)?;
            want.replay(ev);
            if records_at.contains(&t) {
                let info = want.node("n1").expect("n1 made the events");
                let mut known = NodeSet::default();
                let mut superseded = info.superseded();
                if t == beyond_at {
                    superseded.insert_range(beyond, beyond + 2);
                }
                known.0.insert(n1.clone(), superseded);
                known.0.insert("n2".into(), RangeSet::from_ranges([(5, 9)]));
                let mut deleted = NodeSet::default();
                deleted.0.insert(n1.clone(), info.deleted().clone());
                let nodes = vec![(n1.clone(), info.tick())];
                want.restore_state(nodes.iter().map(|(n, t)| (&**n, *t)), &known, &deleted);
                written.push(known.clone());
                w.append(&LogRecord::State {
                    seq: t,
                    time_ms: t,
                    nodes,
                    known,
                    deleted,
                    skipped: RangeSet::new(),
                })?;
            }
            if t % 100 == 0 {
                w.commit(Now::at(t))?;
            }
        }
        w.close(Now::at(events + 1))?;
        Ok((want, written))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{books, scattered_log};
    use super::*;

    /// The plain rebuild: no hooks.
    struct Plain;
    impl RebuildHooks for Plain {}

    /// A rebuild whose reader leaves out of the state records' sets of
    /// superseded ticks those the state has seen
    /// (`LogReader::leave_out_known_within`) rebuilds what replaying every
    /// record whole does: with sets it has seen all of (at run boundaries
    /// and between them), sets reaching past what it has seen, and a node
    /// it never saw an event of.
    #[test]
    fn leaving_out_known_sets_the_state_has_seen_rebuilds_the_same() -> Result<(), PersistError> {
        let tmp = std::env::temp_dir().join(format!("distkv-leave-out-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        for d in ["log", "snap"] {
            std::fs::create_dir_all(tmp.join(d)).map_err(io(&tmp))?;
        }
        // State records after whole runs of the replay and within one.
        let (mut want, _) = scattered_log(
            &tmp.join("log"),
            1_300,
            &[512, 700, 1_024, 1_300],
            (1_024, 1_400),
        )?;
        resume_above_reservation(&mut want, 0);

        let files = Files {
            dir: &tmp,
            me: "n0",
            reserved_tick: 0,
            log_end: None,
            limits: LogLimits::default(),
            mode: RecoveryMode::TruncateTail,
        };
        let mut info = RecoveryInfo::default();
        let got = rebuild(&files, &mut Plain, &mut info)?;
        assert_eq!((info.events, info.states), (1_300, 4));
        assert_eq!(got.digest(), want.digest());
        assert_eq!(books(&got), books(&want));
        let n1 = got.node("n1").expect("n1");
        assert!(n1.superseded().ranges().count() > 20, "scattered");
        assert!(
            n1.superseded().contains(1_401),
            "the sets reaching past were read"
        );
        assert!(got.node("n2").is_some_and(|n| n.superseded().contains(8)));
        std::fs::remove_dir_all(&tmp).ok();
        Ok(())
    }
}
