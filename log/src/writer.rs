//! The log writer: group commit, fsync policy, rotation and recovery on open.
//!
//! A [`LogWriter`] owns one event-log directory (one writer per directory;
//! the caller guarantees that). Records are [`append`](LogWriter::append)ed
//! to a pending group in sequence order, and [`commit`](LogWriter::commit)
//! writes the whole group as one block with one `write` call, then applies
//! the [`FsyncPolicy`]. The writer never reads a clock: every call that
//! depends on time takes the caller's [`Now`], which holds two clocks. Every
//! interval (fsync, rotation by age) is measured on the *monotonic* one, so
//! that a wall clock stepped back or forth neither stalls nor hurries
//! them; the *wall* clock only stamps segment headers (`created_ms`, for
//! people and for retention by age).
//!
//! Invariants:
//! * events are appended with consecutive sequence numbers, and a state
//!   record carries the seq of the last event before it (see
//!   [`crate::record`]); the writer refuses anything else, so the files
//!   never hold a gap;
//! * a commit writes exactly one block, to the newest segment only;
//! * rotation happens only before a commit, and only when the current
//!   segment holds at least one event (a successor of a segment without
//!   events would need the same first seq, and so the same file name; state
//!   records alone keep going to the current segment). A segment is named
//!   only once the one before it is durable, so that only the newest
//!   segment can ever have a torn tail. Without the fsync thread the
//!   closing segment is fsynced, the new one created with its header and
//!   fsynced, then the directory. With it (see
//!   [`WriterConfig::sync_in_background`]) no fsync holds the writer: the
//!   new segment is created under a pending name (`<segment name>.new`,
//!   which readers ignore) and written to at once, and the thread fsyncs
//!   the closed segment, then the new one, renames it to its segment name
//!   and fsyncs the directory, in that order; its records count as synced
//!   only after that (one rotation at a time: while one is under way, the
//!   open segment grows on). Opening finishes a rotation that a crash or a
//!   failure interrupted ([`finish_rotations`]). The new segment's first
//!   seq is the old one's last event seq + 1;
//! * after any I/O error the writer refuses further work (the state of the
//!   file and of the page cache is unknown): drop it and open it again,
//!   which recovers the directory.
//!
//! Opening a directory recovers it: the newest segment is read by a
//! [`SegmentReader`] in the configured [`RecoveryMode`] (see
//! [`crate::reader`] for how damage is classified). A *torn tail* — damage
//! with nothing valid after it — is cut off with
//! [`RecoveryMode::TruncateTail`] and [`RecoveryMode::Salvage`], after the
//! cut bytes were kept in the `damaged/` subdirectory
//! ([`crate::salvage`]), and the writer continues **appending to that same
//! segment** after its last valid record. Damage followed by valid blocks
//! is refused ([`LogError::Salvageable`]) unless the mode is `Salvage`,
//! which rewrites the segment with every valid record (the damaged file is
//! kept). With [`RecoveryMode::Strict`] any damage is an error. Nothing is
//! ever cut or rewritten without a copy. Older segments are not scanned on
//! open; [`LogReader`](crate::LogReader) checks them. A caller that has just
//! read the whole log (a node's start replays it first) hands the reader's
//! [`SegmentScan`] of the newest segment to [`LogWriter::open_with_scan`],
//! which then decides the same from it without reading the segment again.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use distkv_model::{NodeName, UpdateEvent};

use crate::block::{push_record, BlockEncoder, MAX_BLOCK_LEN};
use crate::error::{io_err, LogError, Result};
use crate::reader::{SegmentReader, SegmentScan};
use crate::record::{check_sequence, encode_event, EventForm, LogRecord};
use crate::retention::{retain, RemovedSegment, RetentionPolicy};
use crate::salvage::{keep_aside, keep_tail, salvage_segment, SalvageReport};
use crate::segment::{
    list_pending_segments, list_segments, pending_segment_file_name, read_segment_header,
    segment_file_name, sync_dir, SegmentHeader,
};
use crate::syncer::{self, plain_fsync, Job, Outcome, Syncer};
use crate::Seq;

/// Event records encoded ahead of their append (say while a lock on what
/// they are read from is held, so that the lock is not held for the
/// file's I/O), then appended with [`LogWriter::append_batch`]. The
/// records are encoded here, as [`LogWriter::append_event`] encodes them.
#[derive(Debug, Default)]
pub struct EventBatch {
    first_seq: Seq,
    time_ms: u64,
    bytes: Vec<u8>,
    /// Where each record's bytes end.
    ends: Vec<usize>,
}

impl EventBatch {
    /// Empties the batch for records from seq `first_seq` on, stamped
    /// `time_ms`; keeps its buffers unless a rare large batch (a backlog
    /// written at once) grew them beyond [`EventBatch::KEPT_BYTES`].
    pub fn start(&mut self, first_seq: Seq, time_ms: u64) {
        self.first_seq = first_seq;
        self.time_ms = time_ms;
        if self.bytes.capacity() > Self::KEPT_BYTES {
            *self = EventBatch {
                first_seq,
                time_ms,
                ..EventBatch::default()
            };
        }
        self.bytes.clear();
        self.ends.clear();
    }

    /// Most bytes of buffer a batch keeps between uses.
    pub const KEPT_BYTES: usize = 4 << 20;

    /// Encodes the next event record: `event` is an [`UpdateEvent`] or an
    /// in-memory log's record of one ([`crate::LogEntry`]). Returns its seq.
    pub fn push<E: EventForm + ?Sized>(&mut self, event: &E) -> Seq {
        let seq = self.first_seq.wrapping_add(self.ends.len() as Seq);
        encode_event(seq, self.time_ms, event, &mut self.bytes);
        self.ends.push(self.bytes.len());
        seq
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn record(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

/// The time of a call, on the two clocks the writer needs (it reads none
/// itself).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Now {
    /// Wall-clock time, ms since the Unix epoch: stamps segment headers.
    pub wall_ms: u64,
    /// A monotonic clock in ms, any origin, never going back: every
    /// interval is measured on it.
    pub mono_ms: u64,
}

impl Now {
    /// Both clocks at `ms`: a fixed time, as tests, benches and generated
    /// histories use (they have one clock).
    pub const fn at(ms: u64) -> Now {
        Now {
            wall_ms: ms,
            mono_ms: ms,
        }
    }
}

/// When a commit is made durable with fsync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync every commit: nothing committed is ever lost.
    Always,
    /// fsync at a commit when the last fsync is at least this old (on the
    /// monotonic clock); call
    /// [`LogWriter::sync_if_due`] by [`LogWriter::sync_deadline`] so that
    /// at most this much committed writing is at risk when idle too.
    Interval(Duration),
    /// Never fsync on commit (the OS writes back when it likes). Rotation
    /// still fsyncs the segment it closes, and [`LogWriter::sync`] and
    /// [`LogWriter::close`] still fsync.
    Never,
}

impl Default for FsyncPolicy {
    /// `Interval(1 s)`: at most a second of writes at risk.
    fn default() -> FsyncPolicy {
        FsyncPolicy::Interval(Duration::from_secs(1))
    }
}

impl FsyncPolicy {
    /// Whether a commit at `now_ms` must fsync, the last fsync having
    /// happened at `last_sync_ms` (monotonic ms).
    pub fn due(&self, last_sync_ms: u64, now_ms: u64) -> bool {
        match self {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(d) => now_ms.saturating_sub(last_sync_ms) >= millis(*d),
            FsyncPolicy::Never => false,
        }
    }
}

/// How often a due fsync looks again while one runs in the background, ms.
pub const SYNC_RETRY_MS: u64 = 10;

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What to do with damage found in a segment (see [`crate::reader`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Cut a torn tail — a damaged last block (cut short, over-long or
    /// failing its CRC) or a partial block at the end, with nothing valid
    /// after it — off the newest segment and go on, keeping the cut bytes
    /// in `damaged/`. A torn header of the newest segment is rewritten
    /// (the segment then holds no records). Damage followed by valid
    /// blocks, and damage that no crash explains, are errors.
    #[default]
    TruncateTail,
    /// Any damage is an error.
    Strict,
    /// As `TruncateTail`, and damage followed by valid blocks is skipped:
    /// every valid block after it is kept, the events it held are
    /// recorded as lost ([`LogRecord::Lost`]), and the segment is rewritten
    /// after the damaged file was kept in `damaged/`.
    Salvage,
}

/// How a [`LogWriter`] writes.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// The node whose log this is; written into every segment header and
    /// checked when reopening (1 to 65 535 bytes).
    pub node: NodeName,
    /// When commits are fsynced.
    pub fsync: FsyncPolicy,
    /// Rotate before a commit once the segment is at least this large
    /// (bytes, header included). Default 64 MiB.
    pub max_segment_bytes: u64,
    /// Rotate before a commit once the segment is at least this old,
    /// measured on the monotonic clock from when this writer created it (a
    /// segment found when opening counts its age from its header's
    /// wall-clock `created_ms`, at most this much). Default 1 h.
    pub max_segment_age: Duration,
    /// What to do with damage found when opening.
    pub recovery: RecoveryMode,
    /// Largest records area of one block (and so of one commit), at most
    /// [`MAX_BLOCK_LEN`]. Default [`MAX_BLOCK_LEN`].
    pub max_block_bytes: usize,
    /// Records areas smaller than this are written uncompressed. Default 512.
    pub compress_min_bytes: usize,
    /// zstd level for compressed blocks. Default 1 (fast).
    pub zstd_level: i32,
    /// The seq of the first record when the directory holds no segment yet
    /// (at least 1; ignored otherwise). Default 1.
    pub first_seq: Seq,
    /// With [`FsyncPolicy::Interval`]: the policy's fsyncs run on a thread
    /// of the writer's own, so that a slow fsync holds back no commit (see
    /// the `syncer` module; at most one runs at a time, and one that is due
    /// while another runs starts when that one is done), and so do a
    /// rotation's (see the module docs). [`LogWriter::sync`] and
    /// [`LogWriter::close`] still fsync themselves (unless a background one
    /// started since the last write) and wait for what runs there. Default
    /// `false`.
    pub sync_in_background: bool,
}

impl WriterConfig {
    /// The defaults for `node`.
    pub fn new(node: impl Into<NodeName>) -> WriterConfig {
        WriterConfig {
            node: node.into(),
            fsync: FsyncPolicy::default(),
            max_segment_bytes: 64 << 20,
            max_segment_age: Duration::from_secs(3600),
            recovery: RecoveryMode::default(),
            max_block_bytes: MAX_BLOCK_LEN,
            compress_min_bytes: 512,
            zstd_level: 1,
            first_seq: 1,
            sync_in_background: false,
        }
    }
}

/// What opening a directory found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The newest segment, scanned (`None`: the directory held no segment
    /// and a first one was created).
    pub segment: Option<PathBuf>,
    /// Valid records (events and state records) found in it.
    pub records: u64,
    /// Bytes of it kept.
    pub valid_bytes: u64,
    /// Bytes cut off its end (0 when nothing was torn).
    pub dropped_bytes: u64,
    /// Where the damage started and what it was, if any was cut off.
    pub damage: Option<(u64, String)>,
    /// Where the bytes cut off were kept (`damaged/…`).
    pub kept: Option<PathBuf>,
    /// Whether its header was torn and has been rewritten.
    pub header_rewritten: bool,
    /// What a salvage did (only in [`RecoveryMode::Salvage`], when damage
    /// was followed by valid blocks).
    pub salvaged: Option<SalvageReport>,
    /// The seq the next appended event must have.
    pub next_seq: Seq,
    /// Rotations found unfinished, see [`finish_rotations`].
    pub unfinished: Vec<UnfinishedRotation>,
}

/// A segment found under its pending name (`<segment name>.new`): a
/// rotation that a crash or a failure of the writer interrupted before the
/// fsync thread had named it (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnfinishedRotation {
    /// The file under its pending name.
    pub pending: PathBuf,
    /// What became of it.
    pub outcome: Unfinished,
}

/// What [`finish_rotations`] did with a segment under its pending name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unfinished {
    /// Named, at this path: it continues the newest segment, which is
    /// whole up to where it begins.
    Named(PathBuf),
    /// Kept in `damaged/`, at this path (`<segment name>.new.unfinished-<ms>`)
    /// and left out of the log.
    KeptAside(PathBuf),
    /// Removed: it was empty (the stop came before its header was
    /// written), so it held nothing.
    Removed,
}

/// Finishes the rotations of the log directory `dir` that were under way
/// when the writer stopped (a crash, a failure, a writer dropped). A
/// segment under its pending name is named — after the newest segment and
/// it were fsynced — if that segment reads whole, without damage, up to
/// exactly where it begins, and both headers are `config`'s node's: then
/// its records continue the log (after a crash the closed segment's fsync
/// may not have been done, but what reads whole is what the disk holds).
/// An empty one (the stop came between its creation and its header) holds
/// nothing and is removed. Otherwise it is kept in `damaged/` and left
/// out: nothing in it was fsynced, and it follows a torn or damaged
/// segment, which recovery then cuts or refuses as usual. [`LogWriter::open`] calls this first; so must
/// whoever reads a directory that a writer will open next, before reading
/// it (a node's start replays the log before its writer opens it).
/// Readers ignore pending files.
pub fn finish_rotations(
    dir: &Path,
    config: &WriterConfig,
    wall_ms: u64,
) -> Result<Vec<UnfinishedRotation>> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    for (first, pending) in list_pending_segments(dir)? {
        let empty = std::fs::metadata(&pending).map_err(io_err(&pending))?.len() == 0;
        if empty {
            std::fs::remove_file(&pending).map_err(io_err(&pending))?;
            sync_dir(dir)?;
            out.push(UnfinishedRotation {
                pending,
                outcome: Unfinished::Removed,
            });
            continue;
        }
        let path = dir.join(segment_file_name(first));
        let before = match path.exists() {
            true => None,
            false => whole_up_to(dir, first, &pending, config)?,
        };
        let outcome = match &before {
            Some(before) => {
                // What the fsync thread would have done.
                let open = |p: &Path| File::open(p).map_err(io_err(p));
                Job::Rotated {
                    old: open(before)?,
                    old_path: before.clone(),
                    new: open(&pending)?,
                    pending: pending.clone(),
                    path: path.clone(),
                    dir: dir.to_path_buf(),
                    upto: first,
                }
                .run(&plain_fsync)
                .map_err(log_error)?;
                Unfinished::Named(path)
            }
            None => {
                Unfinished::KeptAside(keep_aside(dir, &pending, &format!("unfinished-{wall_ms}"))?)
            }
        };
        out.push(UnfinishedRotation { pending, outcome });
    }
    Ok(out)
}

/// The newest segment of `dir`, if it reads whole up to exactly `first`
/// and both its header and `pending`'s (which must be for `first`) are
/// `config`'s node's. I/O errors are errors; damage is `None`.
fn whole_up_to(
    dir: &Path,
    first: Seq,
    pending: &Path,
    config: &WriterConfig,
) -> Result<Option<PathBuf>> {
    let ours = |path: &Path, first: Option<Seq>| match read_segment_header(path) {
        Ok(h) => Ok(h.node == config.node && first.is_none_or(|f| f == h.first_seq)),
        Err(e @ LogError::Io { .. }) => Err(e),
        Err(_) => Ok(false),
    };
    if !ours(pending, Some(first))? {
        return Ok(None);
    }
    let Some(newest) = list_segments(dir)?.pop().filter(|s| s.first_seq < first) else {
        return Ok(None);
    };
    if !ours(&newest.path, None)? {
        return Ok(None);
    }
    let mut reader = match SegmentReader::open(&newest.path, RecoveryMode::Strict) {
        Ok(r) => r,
        Err(e @ LogError::Io { .. }) => return Err(e),
        Err(_) => return Ok(None),
    };
    for rec in reader.by_ref() {
        match rec {
            Ok(_) => {}
            Err(e @ LogError::Io { .. }) => return Err(e),
            Err(_) => return Ok(None),
        }
    }
    let whole = reader
        .finished_scan()
        .is_some_and(|scan| scan.torn.is_none() && scan.next_seq == first);
    Ok(whole.then_some(newest.path))
}

/// What one [`LogWriter::commit`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitInfo {
    /// Records written (0: nothing was pending, no block written).
    pub records: u64,
    /// Seq the first event of the block has (or would have had).
    pub first_seq: Seq,
    /// The segment the block went to (its first seq, which names it).
    pub segment: Seq,
    /// File offset of the block in that segment (with nothing written:
    /// the segment's length).
    pub offset: u64,
    /// The block's CRC field (0 with nothing written): with `offset`, a
    /// fingerprint of the block.
    pub crc: u32,
    /// Bytes of the block written, its 9-byte header included.
    pub bytes: u64,
    /// Whether the block is zstd-compressed.
    pub compressed: bool,
    /// Whether the commit fsynced (with
    /// [`WriterConfig::sync_in_background`]: started an fsync).
    pub synced: bool,
    /// Whether a new segment was started before writing.
    pub rotated: bool,
}

/// Counters since the writer was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Commits that wrote a block.
    pub blocks: u64,
    /// Records written.
    pub records: u64,
    /// Bytes written to segments (blocks and headers).
    pub bytes: u64,
    /// fsyncs of segment files.
    pub syncs: u64,
    /// Segments started by rotation.
    pub rotations: u64,
    /// Blocks written compressed.
    pub compressed_blocks: u64,
}

/// The open segment.
struct OpenSegment {
    path: PathBuf,
    file: File,
    header: SegmentHeader,
    /// File length (all written bytes).
    len: u64,
    /// Its age when this writer took it over (0 for one it created), ms.
    age_at_open: u64,
    /// The monotonic time this writer took it over.
    opened_mono: u64,
}

impl OpenSegment {
    /// Its age at monotonic time `mono_ms`.
    fn age(&self, mono_ms: u64) -> u64 {
        self.age_at_open
            .saturating_add(mono_ms.saturating_sub(self.opened_mono))
    }
}

/// Appends records to an event-log directory (see the module docs).
pub struct LogWriter {
    dir: PathBuf,
    config: WriterConfig,
    seg: OpenSegment,
    encoder: BlockEncoder,
    /// Records area of the pending group.
    pending: Vec<u8>,
    pending_records: u64,
    /// Seq the next appended event gets (pending ones counted).
    next_seq: Seq,
    /// Seq after the last written event.
    written_seq: Seq,
    scratch: Vec<u8>,
    /// Whether written bytes await an fsync.
    dirty: bool,
    /// Monotonic time of the last fsync, or of the start of the last one
    /// in the background (or of opening).
    last_sync_mono: u64,
    /// The fsync thread ([`WriterConfig::sync_in_background`]).
    syncer: Option<Syncer>,
    /// When a due fsync found the thread busy: when to look again.
    sync_retry_mono: u64,
    /// Seq after the last event a finished fsync covers.
    synced_seq: Seq,
    /// `written_seq` when the last fsync in the background started (0:
    /// none yet).
    background_upto: Seq,
    /// [`LogWriter::sync_soon`] asked for an fsync not started yet.
    sync_wanted: bool,
    /// Whether the open segment's directory entry is known durable (or an
    /// fsync that makes it so has started): a segment created by rotation
    /// is made durable on the fsync thread, which a crash may have cut
    /// short, so a segment found when opening is not. Until it is, the
    /// next fsync of the segment is an `fsync` of the file and of the
    /// directory.
    name_synced: bool,
    rotate_requested: bool,
    failed: Option<String>,
    stats: WriterStats,
    recovery: RecoveryReport,
    /// Test hook: the next block write stops after this many bytes and fails.
    #[cfg(test)]
    pub(crate) fail_next_write_after: Option<usize>,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("dir", &self.dir)
            .field("segment", &self.seg.path)
            .field("next_seq", &self.next_seq)
            .field("pending_records", &self.pending_records)
            .finish_non_exhaustive()
    }
}

impl LogWriter {
    /// Opens (creating if needed) the log directory `dir` and recovers it
    /// (see the module docs); `now` stamps a segment created now and
    /// starts the fsync interval. See [`LogWriter::recovery`] for what was
    /// found.
    pub fn open(dir: impl Into<PathBuf>, config: WriterConfig, now: Now) -> Result<LogWriter> {
        LogWriter::open_with_scan(dir, config, now, None)
    }

    /// As [`LogWriter::open`], taking what a reader found reading the
    /// newest segment to its end ([`SegmentScan`], e.g. from the replay
    /// that rebuilt the state from this directory a moment ago) instead of
    /// reading it again. The scan is used only if it is of the newest
    /// segment listed now, read in the configured [`RecoveryMode`], and the
    /// file still has the length it had then; otherwise the segment is read
    /// as `open` does. A torn tail the scan found is cut off (kept in
    /// `damaged/`) just the same.
    pub fn open_with_scan(
        dir: impl Into<PathBuf>,
        config: WriterConfig,
        now: Now,
        scan: Option<SegmentScan>,
    ) -> Result<LogWriter> {
        let dir = dir.into();
        if config.first_seq == 0 {
            return Err(LogError::InvalidInput(
                "first_seq must be at least 1".into(),
            ));
        }
        if config.max_block_bytes == 0 || config.max_block_bytes > MAX_BLOCK_LEN {
            return Err(LogError::InvalidInput(format!(
                "max_block_bytes must be 1 ..= {MAX_BLOCK_LEN}"
            )));
        }
        // Validates the node name before touching the disk.
        SegmentHeader {
            node: config.node.clone(),
            first_seq: config.first_seq,
            created_ms: now.wall_ms,
        }
        .encode()?;
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => sync_dir(p)?,
                _ => sync_dir(Path::new("."))?,
            }
        }
        let unfinished = finish_rotations(&dir, &config, now.wall_ms)?;
        let segments = list_segments(&dir)?;
        let created = segments.is_empty();
        let (seg, mut recovery, written) = match segments.last() {
            None => {
                let seg = create_segment(&dir, &config.node, config.first_seq, now)?;
                let report = RecoveryReport {
                    next_seq: config.first_seq,
                    ..RecoveryReport::default()
                };
                let written = seg.len;
                (seg, report, written)
            }
            Some(last) => match scan.filter(|s| scan_is_current(s, &last.path, &config)) {
                Some(scan) => resume(&dir, scan, &config, now)?,
                None => recover(&dir, &last.path, &config, now)?,
            },
        };
        recovery.unfinished = unfinished;
        let next_seq = recovery.next_seq;
        // Closed segments were fsynced before their successor was named.
        let synced_seq = seg.header.first_seq;
        let syncer = match config.fsync {
            FsyncPolicy::Interval(_) if config.sync_in_background => {
                Some(Syncer::spawn().map_err(io_err(&dir))?)
            }
            _ => None,
        };
        Ok(LogWriter {
            encoder: BlockEncoder::new(config.zstd_level, config.compress_min_bytes),
            dir,
            config,
            seg,
            pending: Vec::new(),
            pending_records: 0,
            next_seq,
            written_seq: next_seq,
            scratch: Vec::new(),
            dirty: false,
            last_sync_mono: now.mono_ms,
            syncer,
            sync_retry_mono: 0,
            synced_seq,
            background_upto: 0,
            sync_wanted: false,
            name_synced: created,
            rotate_requested: false,
            failed: None,
            stats: WriterStats {
                bytes: written,
                ..WriterStats::default()
            },
            recovery,
            #[cfg(test)]
            fail_next_write_after: None,
        })
    }

    /// What opening found and repaired.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The configuration.
    pub fn config(&self) -> &WriterConfig {
        &self.config
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The segment being written.
    pub fn segment_path(&self) -> &Path {
        &self.seg.path
    }

    /// The seq the next appended event must have (a state record appended
    /// now must have `next_seq() − 1`).
    pub fn next_seq(&self) -> Seq {
        self.next_seq
    }

    /// The seq after the last event written by a commit (pending records
    /// not counted).
    pub fn written_seq(&self) -> Seq {
        self.written_seq
    }

    /// Records appended but not yet committed.
    pub fn pending_records(&self) -> u64 {
        self.pending_records
    }

    /// Bytes of the pending group (records with their length prefixes).
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Counters since the writer was opened.
    pub fn stats(&self) -> WriterStats {
        self.stats
    }

    /// Test hook: the fsync thread, if any.
    #[cfg(test)]
    pub(crate) fn syncer(&self) -> Option<&Syncer> {
        self.syncer.as_ref()
    }

    /// Adds `record` to the pending group. An event's seq must be
    /// [`next_seq`](LogWriter::next_seq), a state record's `next_seq − 1`
    /// (`InvalidInput` otherwise); [`LogError::Full`] when the group cannot
    /// take it (commit, then append again); `InvalidInput` when it exceeds a
    /// block on its own.
    pub fn append(&mut self, record: &LogRecord) -> Result<()> {
        self.usable()?;
        let mut next = self.next_seq;
        if let Err((expected, found)) = check_sequence(record.place(), &mut next) {
            return Err(LogError::InvalidInput(format!(
                "record {found} is out of sequence: expected {expected}"
            )));
        }
        self.scratch.clear();
        record.encode(&mut self.scratch);
        self.push_scratch(next)
    }

    /// Adds an event record with the next seq to the pending group, without
    /// cloning the event; returns its seq. Errors as [`LogWriter::append`].
    pub fn append_event(&mut self, time_ms: u64, event: &UpdateEvent) -> Result<Seq> {
        self.usable()?;
        let seq = self.next_seq;
        let next = self.seq_after_next()?;
        self.scratch.clear();
        encode_event(seq, time_ms, event, &mut self.scratch);
        self.push_scratch(next)?;
        Ok(seq)
    }

    /// Appends the records of `batch` from its `from`-th on to the pending
    /// group, until the group is full; returns the number of the first
    /// record not appended (`batch.len()` when all were). The batch's
    /// first record must have seq [`next_seq`](LogWriter::next_seq) once
    /// the `from` before it are counted (`InvalidInput` otherwise, as for a
    /// record that exceeds a block on its own). When it returns less than
    /// `batch.len()`, commit, then append the rest.
    pub fn append_batch(&mut self, batch: &EventBatch, from: usize) -> Result<usize> {
        self.usable()?;
        let seq = batch.first_seq.checked_add(from as Seq);
        if from > batch.len() || seq != Some(self.next_seq) {
            return Err(LogError::InvalidInput(format!(
                "batch record {from} does not have seq {}",
                self.next_seq
            )));
        }
        for i in from..batch.len() {
            let next = self.seq_after_next()?;
            match self.push_encoded(batch.record(i), next) {
                Err(LogError::Full { .. }) => return Ok(i),
                r => r?,
            }
        }
        Ok(batch.len())
    }

    /// The seq after the next event's (`InvalidInput` at the end of the
    /// seqs).
    fn seq_after_next(&self) -> Result<Seq> {
        self.next_seq
            .checked_add(1)
            .ok_or_else(|| LogError::InvalidInput("sequence numbers are exhausted".into()))
    }

    /// Moves the encoded record in `scratch` to the pending group; `next` is
    /// the next event seq after it.
    fn push_scratch(&mut self, next: Seq) -> Result<()> {
        let scratch = std::mem::take(&mut self.scratch);
        let r = self.push_encoded(&scratch, next);
        self.scratch = scratch;
        r
    }

    /// Moves an encoded record to the pending group; `next` is the next
    /// event seq after it.
    fn push_encoded(&mut self, record: &[u8], next: Seq) -> Result<()> {
        let need = 4 + record.len();
        let limit = self.config.max_block_bytes;
        if need > limit {
            return Err(LogError::InvalidInput(format!(
                "record of {need} bytes exceeds the block limit of {limit} bytes"
            )));
        }
        if self.pending.len() + need > limit {
            return Err(LogError::Full {
                pending: self.pending.len(),
                record: need,
                limit,
            });
        }
        push_record(&mut self.pending, record);
        self.pending_records += 1;
        self.next_seq = next;
        Ok(())
    }

    /// Asks for a new segment before the next commit that writes records
    /// (dropped if the open segment holds no event yet).
    pub fn rotate(&mut self) {
        self.rotate_requested = true;
    }

    /// Writes the pending group as one block (rotating first when due),
    /// then fsyncs as the policy says. With nothing pending, only fsyncs if
    /// the interval is due.
    pub fn commit(&mut self, now: Now) -> Result<CommitInfo> {
        self.usable()?;
        if self.pending_records == 0 {
            let synced = self.sync_if_due(now)?;
            return Ok(CommitInfo {
                first_seq: self.written_seq,
                segment: self.seg.header.first_seq,
                offset: self.seg.len,
                synced,
                ..CommitInfo::default()
            });
        }
        let rotated = self.rotate_if_due(now)?;
        let (block, compressed) = self.encoder.encode(&self.pending);
        let bytes = block.len() as u64;
        let crc = block
            .get(4..8)
            .map_or(0, |b| u32::from_le_bytes(crate::segment::le_array(b)));
        #[cfg(test)]
        let fail_after = self.fail_next_write_after.take();
        #[cfg(not(test))]
        let fail_after: Option<usize> = None;
        if let Err(e) = write_block(&mut self.seg.file, block, fail_after) {
            // Try to leave no partial block behind; recovery would cut it
            // anyway.
            let _ = self.seg.file.set_len(self.seg.len);
            return Err(self.fail(&self.seg.path.clone(), e));
        }
        let info = CommitInfo {
            records: self.pending_records,
            first_seq: self.written_seq,
            segment: self.seg.header.first_seq,
            offset: self.seg.len,
            crc,
            bytes,
            compressed,
            synced: false,
            rotated,
        };
        self.seg.len += bytes;
        self.stats.blocks += 1;
        self.stats.records += self.pending_records;
        self.stats.bytes += bytes;
        self.stats.compressed_blocks += compressed as u64;
        self.written_seq = self.next_seq;
        self.pending.clear();
        self.pending_records = 0;
        self.dirty = true;
        let synced = self.sync_if_due(now)?;
        Ok(CommitInfo { synced, ..info })
    }

    /// fsyncs the open segment now, whatever the policy. When an fsync was
    /// started in the background and nothing was written since, that one
    /// is waited for instead; otherwise this one runs beside it, and then
    /// waits for it too (an fsync error is reported to one of the two
    /// handles only, so its outcome is collected either way).
    pub fn sync(&mut self, now: Now) -> Result<()> {
        self.usable()?;
        // Nothing written since an fsync in the background started (seqs
        // start at 1): that one covers everything.
        let covered = !self.dirty && self.background_upto == self.written_seq;
        if !covered {
            if self.name_synced {
                if let Err(e) = self.seg.file.sync_data() {
                    return Err(self.fail(&self.seg.path.clone(), e));
                }
            } else if let Err(e) = sync_created(&self.dir, &self.seg) {
                return Err(self.failed(e));
            }
            self.name_synced = true;
            self.stats.syncs += 1;
        }
        if let Some(outcome) = self.syncer.as_ref().and_then(Syncer::wait) {
            self.collect(outcome)?;
        }
        // Everything written is durable now, a rotation's segment named.
        self.dirty = false;
        self.sync_wanted = false;
        self.synced_seq = self.written_seq;
        self.last_sync_mono = now.mono_ms;
        Ok(())
    }

    /// Asks for an fsync of everything written so far without waiting for
    /// it, whatever the policy: with [`WriterConfig::sync_in_background`],
    /// one is started in the background now or, if one is running, as
    /// soon as it is done (see [`sync_deadline`](LogWriter::sync_deadline));
    /// without, it is done here. [`synced_seq`](LogWriter::synced_seq) says
    /// when it is done.
    pub fn sync_soon(&mut self, now: Now) -> Result<()> {
        self.sync_wanted = true;
        self.sync_if_due(now).map(drop)
    }

    /// Seq after the last event that a finished fsync is known to cover
    /// (the fsyncs in the background are known once a later call collected
    /// them).
    pub fn synced_seq(&self) -> Seq {
        self.synced_seq
    }

    /// fsyncs (or, with [`WriterConfig::sync_in_background`], starts an
    /// fsync) if committed writes await it and the policy's interval is
    /// due; returns whether it did. An error of an fsync that ran in the
    /// background since the last call is returned here (and fails the
    /// writer).
    pub fn sync_if_due(&mut self, now: Now) -> Result<bool> {
        self.usable()?;
        self.collect_done()?;
        if !self.dirty {
            self.sync_wanted = false;
            return Ok(false);
        }
        if !self.sync_wanted && !self.config.fsync.due(self.last_sync_mono, now.mono_ms) {
            return Ok(false);
        }
        let Some(syncer) = &self.syncer else {
            self.sync(now)?;
            return Ok(true);
        };
        if syncer.busy() {
            self.sync_retry_mono = now.mono_ms.saturating_add(SYNC_RETRY_MS);
            return Ok(false);
        }
        match self.seg.file.try_clone() {
            Ok(file) => {
                let (path, upto) = (self.seg.path.clone(), self.written_seq);
                syncer.start(match self.name_synced {
                    true => Job::Data { file, path, upto },
                    false => Job::Created {
                        file,
                        path,
                        dir: self.dir.clone(),
                        upto,
                    },
                });
                self.name_synced = true;
                self.stats.syncs += 1;
                self.dirty = false;
                self.sync_wanted = false;
                self.background_upto = self.written_seq;
                self.last_sync_mono = now.mono_ms;
            }
            // No second handle (out of file descriptors): this one.
            Err(_) => self.sync(now)?,
        }
        Ok(true)
    }

    /// Takes the outcome of an fsync that ran in the background: an error
    /// fails the writer.
    fn collect(&mut self, outcome: Outcome) -> Result<()> {
        outcome.map_err(|(path, e)| self.fail(&path, e))
    }

    /// Collects what the fsync thread finished since the last call: an
    /// error fails the writer, success raises `synced_seq`.
    fn collect_done(&mut self) -> Result<()> {
        let Some(syncer) = &self.syncer else {
            return Ok(());
        };
        if let Some(outcome) = syncer.take_done() {
            // Raised only by jobs that succeeded.
            let upto = syncer.synced_upto();
            self.collect(outcome)?;
            self.synced_seq = self.synced_seq.max(upto);
        }
        Ok(())
    }

    /// When (monotonic ms) [`sync_if_due`](LogWriter::sync_if_due) must
    /// next be called to honour an `Interval` policy or a
    /// [`sync_soon`](LogWriter::sync_soon) (`None`: nothing awaits an
    /// fsync, or the policy never fsyncs on its own). While an fsync runs
    /// in the background, a due one is looked at again every
    /// [`SYNC_RETRY_MS`].
    pub fn sync_deadline(&self) -> Option<u64> {
        match self.config.fsync {
            _ if self.sync_wanted && self.dirty => Some(self.sync_retry_mono),
            FsyncPolicy::Interval(d) if self.dirty => Some(
                self.last_sync_mono
                    .saturating_add(millis(d))
                    .max(self.sync_retry_mono),
            ),
            _ => None,
        }
    }

    /// Whether the open segment holds writes no finished fsync covers.
    fn unsynced(&self) -> bool {
        self.dirty || self.syncer.as_ref().is_some_and(Syncer::busy)
    }

    /// Waits until the fsync thread has done what was queued (a rotation
    /// it names, say), whatever became of the writer, without collecting
    /// the outcome: so that another writer may open the directory while
    /// this one, failed, is still around.
    pub fn settle(&self) {
        if let Some(syncer) = &self.syncer {
            syncer.settle();
        }
    }

    /// Commits what is pending and fsyncs: the clean way to stop. (Dropping
    /// a writer loses its pending records and does not fsync.)
    pub fn close(mut self, now: Now) -> Result<()> {
        self.commit(now)?;
        self.sync(now)
    }

    /// Deletes old closed segments of this writer's directory, see
    /// [`retain`] (`wall_ms`: the wall clock, which segment headers are
    /// stamped with). The open segment is never deleted.
    pub fn retain(
        &self,
        policy: &RetentionPolicy,
        covered_seq: Seq,
        wall_ms: u64,
    ) -> Result<Vec<RemovedSegment>> {
        retain(&self.dir, policy, covered_seq, wall_ms)
    }

    /// Starts a new segment if the open one is due for rotation and holds
    /// an event; returns whether it did.
    fn rotate_if_due(&mut self, now: Now) -> Result<bool> {
        let age = self.seg.age(now.mono_ms);
        let due = self.rotate_requested
            || self.seg.len >= self.config.max_segment_bytes
            || age >= millis(self.config.max_segment_age);
        if !due || self.written_seq == self.seg.header.first_seq {
            // A segment without events is never closed: its successor would
            // need the same first seq, and so the same name.
            self.rotate_requested = false;
            return Ok(false);
        }
        if self.syncer.is_some() {
            return self.rotate_in_background(now);
        }
        // Only the newest segment may have a torn tail: the closing one is
        // durable before its successor is named.
        if self.unsynced() {
            self.sync(now)?;
        }
        let new = create_segment(&self.dir, &self.config.node, self.written_seq, now);
        let new = new.map_err(|e| self.failed(e))?;
        self.stats.bytes += new.len;
        self.stats.syncs += 1;
        // The old file is closed here, after its successor is durable.
        self.seg = new;
        self.rotate_requested = false;
        self.stats.rotations += 1;
        Ok(true)
    }

    /// Rotation with the fsync thread: the new segment is created under
    /// its pending name and written to at once; the thread fsyncs the
    /// closed segment, then the new one, names it, and fsyncs the
    /// directory ([`Job::Rotated`]), so no fsync holds the writer and a
    /// segment is named only once its predecessor is durable. One rotation
    /// at a time: while one is under way the open segment grows on.
    fn rotate_in_background(&mut self, now: Now) -> Result<bool> {
        self.collect_done()?;
        if self.syncer.as_ref().is_none_or(Syncer::rotating) {
            return Ok(false);
        }
        let first = self.written_seq;
        let pending = self.dir.join(pending_segment_file_name(first));
        let new = create_segment_file(&pending, &self.config.node, first, now)
            .and_then(|new| Ok((new.file.try_clone().map_err(io_err(&pending))?, new)));
        let (handle, new) = new.map_err(|e| self.failed(e))?;
        let path = self.dir.join(segment_file_name(first));
        let old = std::mem::replace(
            &mut self.seg,
            OpenSegment {
                path: path.clone(),
                ..new
            },
        );
        let job = Job::Rotated {
            old: old.file,
            old_path: old.path,
            new: handle,
            pending,
            path,
            dir: self.dir.clone(),
            upto: first,
        };
        if let Some(syncer) = &self.syncer {
            syncer.start(job);
        }
        // That job covers all that was written, and the new name.
        self.dirty = false;
        self.background_upto = first;
        self.name_synced = true;
        self.stats.bytes += self.seg.len;
        self.stats.syncs += 1;
        self.rotate_requested = false;
        self.stats.rotations += 1;
        Ok(true)
    }

    fn usable(&self) -> Result<()> {
        match &self.failed {
            None => Ok(()),
            Some(why) => Err(LogError::InvalidInput(format!(
                "the writer failed earlier ({why}); open the log again"
            ))),
        }
    }

    fn fail(&mut self, file: &Path, e: std::io::Error) -> LogError {
        self.failed(io_err(file)(e))
    }

    /// Fails the writer with `err` (see [`LogWriter::usable`]).
    fn failed(&mut self, err: LogError) -> LogError {
        self.failed = Some(err.to_string());
        err
    }
}

/// Writes `block`; the test hook stops after `fail_after` bytes and fails.
fn write_block(file: &mut File, block: &[u8], fail_after: Option<usize>) -> std::io::Result<()> {
    if let Some(n) = fail_after {
        file.write_all(&block[..n.min(block.len())])?;
        return Err(std::io::Error::other("injected write failure"));
    }
    file.write_all(block)
}

/// Creates segment `first_seq` in `dir`: new file, header, fsync of file and
/// directory.
fn create_segment(dir: &Path, node: &NodeName, first_seq: Seq, now: Now) -> Result<OpenSegment> {
    let path = dir.join(segment_file_name(first_seq));
    let seg = create_segment_file(&path, node, first_seq, now)?;
    sync_created(dir, &seg)?;
    Ok(seg)
}

/// fsyncs a segment just created, then the directory that names it.
fn sync_created(dir: &Path, seg: &OpenSegment) -> Result<()> {
    syncer::sync_created(&seg.file, &seg.path, dir, &plain_fsync).map_err(log_error)
}

/// The error of an [`Outcome`] as a [`LogError`].
fn log_error((path, e): (PathBuf, std::io::Error)) -> LogError {
    io_err(&path)(e)
}

/// Creates segment `first_seq` as the file `path` with its header, not
/// yet durable.
fn create_segment_file(
    path: &Path,
    node: &NodeName,
    first_seq: Seq,
    now: Now,
) -> Result<OpenSegment> {
    let header = SegmentHeader {
        node: node.clone(),
        first_seq,
        created_ms: now.wall_ms,
    };
    let bytes = header.encode()?;
    let mut file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(path)
        .map_err(io_err(path))?;
    file.write_all(&bytes).map_err(io_err(path))?;
    Ok(OpenSegment {
        path: path.to_path_buf(),
        file,
        header,
        len: bytes.len() as u64,
        age_at_open: 0,
        opened_mono: now.mono_ms,
    })
}

/// Recovers the newest segment `path` of `dir` (see the module docs) and
/// opens it for appending. Returns it, the report and the bytes written (a
/// rewritten header).
fn recover(
    dir: &Path,
    path: &Path,
    config: &WriterConfig,
    now: Now,
) -> Result<(OpenSegment, RecoveryReport, u64)> {
    let mut reader = SegmentReader::open(path, config.recovery)?;
    check_node(reader.header(), path, config)?;
    for rec in reader.by_ref() {
        rec?;
    }
    match reader.finished_scan() {
        Some(scan) => {
            drop(reader);
            resume(dir, scan, config, now)
        }
        None => {
            // Salvage mode, and damage with valid blocks after it: rewrite
            // the segment with every valid record (the damaged file is
            // kept), then recover the result, which must now be clean.
            drop(reader);
            let salvaged = salvage_segment(dir, path, config, None, now.wall_ms)?;
            let clean = WriterConfig {
                recovery: RecoveryMode::TruncateTail,
                ..config.clone()
            };
            let (seg, mut report, written) = recover(dir, path, &clean, now)?;
            report.salvaged = salvaged;
            Ok((seg, report, written))
        }
    }
}

/// Whether `scan` may stand for reading the newest segment `newest` now:
/// it is of that file, read in the configured mode, and the file has not
/// changed length since.
fn scan_is_current(scan: &SegmentScan, newest: &Path, config: &WriterConfig) -> bool {
    scan.path == newest
        && scan.mode == config.recovery
        && fs::metadata(newest).is_ok_and(|m| m.len() == scan.file_len)
}

/// Refuses a segment whose header names another node.
fn check_node(header: Option<&SegmentHeader>, path: &Path, config: &WriterConfig) -> Result<()> {
    match header.filter(|h| h.node != config.node) {
        Some(h) => Err(LogError::InvalidInput(format!(
            "{} belongs to node {:?}, not {:?}",
            path.display(),
            h.node,
            config.node
        ))),
        None => Ok(()),
    }
}

/// Opens the newest segment, read to its end as `scan` says, for
/// appending: cuts a torn tail off (after keeping it) or rewrites a torn
/// header. Returns it, the report and the bytes written.
fn resume(
    dir: &Path,
    scan: SegmentScan,
    config: &WriterConfig,
    now: Now,
) -> Result<(OpenSegment, RecoveryReport, u64)> {
    let path = scan.path.as_path();
    check_node(scan.header.as_ref(), path, config)?;
    let mut report = RecoveryReport {
        segment: Some(path.to_path_buf()),
        records: scan.records,
        valid_bytes: scan.valid_bytes,
        next_seq: scan.next_seq,
        ..RecoveryReport::default()
    };
    let mut written = 0;
    let header = match scan.torn.clone() {
        None => scan.header.clone(),
        Some(torn) => {
            // Keep what is cut off, then cut it.
            report.kept = keep_tail(dir, path, torn.offset, now.wall_ms)?;
            report.dropped_bytes = scan.file_len - torn.offset;
            report.damage = Some((torn.offset, torn.reason));
            let mut file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_err(path))?;
            file.set_len(torn.offset).map_err(io_err(path))?;
            if torn.offset == 0 {
                // Nothing in this file could be read, but its name says
                // where it starts: a fresh header, no records.
                let header = SegmentHeader {
                    node: config.node.clone(),
                    first_seq: report.next_seq,
                    created_ms: now.wall_ms,
                };
                let bytes = header.encode()?;
                file.write_all(&bytes).map_err(io_err(path))?;
                report.valid_bytes = bytes.len() as u64;
                report.header_rewritten = true;
                written = bytes.len() as u64;
            }
            file.sync_all().map_err(io_err(path))?;
            if torn.offset == 0 {
                None
            } else {
                scan.header.clone()
            }
        }
    };
    let (header, age_at_open) = match header {
        Some(h) => {
            let age = now
                .wall_ms
                .saturating_sub(h.created_ms)
                .min(millis(config.max_segment_age));
            (h, age)
        }
        None => (
            SegmentHeader {
                node: config.node.clone(),
                first_seq: report.next_seq,
                created_ms: now.wall_ms,
            },
            0,
        ),
    };
    let file = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io_err(path))?;
    let seg = OpenSegment {
        path: path.to_path_buf(),
        file,
        header,
        len: report.valid_bytes,
        age_at_open,
        opened_mono: now.mono_ms,
    };
    Ok((seg, report, written))
}
