//! The log writer: group commit, fsync policy, rotation and recovery on open.
//!
//! A [`LogWriter`] owns one event-log directory (one writer per directory;
//! the caller guarantees that). Records are [`append`](LogWriter::append)ed
//! to a pending group in sequence order, and [`commit`](LogWriter::commit)
//! writes the whole group as one block with one `write` call, then applies
//! the [`FsyncPolicy`]. The writer never reads a clock: every call that
//! depends on time takes the caller's `now_ms` (ms since the Unix epoch).
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
//!   records alone keep going to the current segment): the closing segment
//!   is fsynced, the
//!   new segment is created with its header and fsynced, the directory is
//!   fsynced, and only then is the old file closed. The new segment's first
//!   seq is the old one's last event seq + 1;
//! * after any I/O error the writer refuses further work (the state of the
//!   file and of the page cache is unknown): drop it and open it again,
//!   which recovers the directory.
//!
//! Opening a directory recovers it: the newest segment is scanned block by
//! block to the first short or bad block. With [`RecoveryMode::TruncateTail`]
//! the torn tail is cut off (and the file fsynced) and the writer continues
//! **appending to that same segment** after its last valid record; with
//! [`RecoveryMode::Strict`] any damage is an error. Older segments are not
//! scanned on open; [`LogReader`](crate::LogReader) checks them.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use distkv_model::{NodeName, UpdateEvent};

use crate::block::{push_record, BlockEncoder, BlockReader, Next, MAX_BLOCK_LEN};
use crate::error::{io_err, LogError, Result};
use crate::record::{check_sequence, encode_event, LogRecord};
use crate::retention::{retain, RemovedSegment, RetentionPolicy};
use crate::segment::{list_segments, segment_file_name, sync_dir, SegmentHeader};
use crate::Seq;

/// When a commit is made durable with fsync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync every commit: nothing committed is ever lost.
    Always,
    /// fsync at a commit when the last fsync is at least this old; call
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
    /// happened at `last_sync_ms`.
    pub fn due(&self, last_sync_ms: u64, now_ms: u64) -> bool {
        match self {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(d) => now_ms.saturating_sub(last_sync_ms) >= millis(*d),
            FsyncPolicy::Never => false,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What to do with damage at the end of the newest segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Cut a torn tail (a block cut short, over-long or failing its CRC, and
    /// everything after it) off the newest segment and go on. A torn header
    /// of the newest segment is rewritten (the segment then holds no
    /// records). Damage that no crash explains is still an error.
    #[default]
    TruncateTail,
    /// Any damage is an error.
    Strict,
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
    /// Rotate before a commit once the segment is at least this old
    /// (measured from its header's `created_ms`). Default 1 h.
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
    /// Whether its header was torn and has been rewritten.
    pub header_rewritten: bool,
    /// The seq the next appended event must have.
    pub next_seq: Seq,
}

/// What one [`LogWriter::commit`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitInfo {
    /// Records written (0: nothing was pending, no block written).
    pub records: u64,
    /// Seq the first event of the block has (or would have had).
    pub first_seq: Seq,
    /// Bytes of the block written, its 9-byte header included.
    pub bytes: u64,
    /// Whether the block is zstd-compressed.
    pub compressed: bool,
    /// Whether the commit fsynced.
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
    last_sync_ms: u64,
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
    /// (see the module docs); `now_ms` stamps a segment created now and
    /// starts the fsync interval. See [`LogWriter::recovery`] for what was
    /// found.
    pub fn open(dir: impl Into<PathBuf>, config: WriterConfig, now_ms: u64) -> Result<LogWriter> {
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
            created_ms: now_ms,
        }
        .encode()?;
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => sync_dir(p)?,
                _ => sync_dir(Path::new("."))?,
            }
        }
        let segments = list_segments(&dir)?;
        let (seg, recovery, written) = match segments.last() {
            None => {
                let seg = create_segment(&dir, &config.node, config.first_seq, now_ms)?;
                let report = RecoveryReport {
                    next_seq: config.first_seq,
                    ..RecoveryReport::default()
                };
                let written = seg.len;
                (seg, report, written)
            }
            Some(last) => recover(&last.path, &config, now_ms)?,
        };
        let next_seq = recovery.next_seq;
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
            last_sync_ms: now_ms,
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

    /// Adds `record` to the pending group. An event's seq must be
    /// [`next_seq`](LogWriter::next_seq), a state record's `next_seq − 1`
    /// (`InvalidInput` otherwise); [`LogError::Full`] when the group cannot
    /// take it (commit, then append again); `InvalidInput` when it exceeds a
    /// block on its own.
    pub fn append(&mut self, record: &LogRecord) -> Result<()> {
        self.usable()?;
        let mut next = self.next_seq;
        if let Err((expected, found)) = check_sequence(record, &mut next) {
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
        let next = seq
            .checked_add(1)
            .ok_or_else(|| LogError::InvalidInput("sequence numbers are exhausted".into()))?;
        self.scratch.clear();
        encode_event(seq, time_ms, event, &mut self.scratch);
        self.push_scratch(next)?;
        Ok(seq)
    }

    /// Moves the encoded record in `scratch` to the pending group; `next` is
    /// the next event seq after it.
    fn push_scratch(&mut self, next: Seq) -> Result<()> {
        let need = 4 + self.scratch.len();
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
        push_record(&mut self.pending, &self.scratch);
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
    pub fn commit(&mut self, now_ms: u64) -> Result<CommitInfo> {
        self.usable()?;
        if self.pending_records == 0 {
            let synced = self.sync_if_due(now_ms)?;
            return Ok(CommitInfo {
                first_seq: self.written_seq,
                synced,
                ..CommitInfo::default()
            });
        }
        let rotated = self.rotate_if_due(now_ms)?;
        let (block, compressed) = self.encoder.encode(&self.pending);
        let bytes = block.len() as u64;
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
        let synced = if self.config.fsync.due(self.last_sync_ms, now_ms) {
            self.sync(now_ms)?;
            true
        } else {
            false
        };
        Ok(CommitInfo { synced, ..info })
    }

    /// fsyncs the open segment now, whatever the policy.
    pub fn sync(&mut self, now_ms: u64) -> Result<()> {
        self.usable()?;
        if let Err(e) = self.seg.file.sync_data() {
            return Err(self.fail(&self.seg.path.clone(), e));
        }
        self.stats.syncs += 1;
        self.dirty = false;
        self.last_sync_ms = now_ms;
        Ok(())
    }

    /// fsyncs if committed writes await it and the policy's interval is
    /// due; returns whether it did.
    pub fn sync_if_due(&mut self, now_ms: u64) -> Result<bool> {
        self.usable()?;
        if self.dirty && self.config.fsync.due(self.last_sync_ms, now_ms) {
            self.sync(now_ms)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// When [`sync_if_due`](LogWriter::sync_if_due) must next be called to
    /// honour an `Interval` policy (`None`: nothing awaits an fsync, or the
    /// policy never fsyncs on its own).
    pub fn sync_deadline(&self) -> Option<u64> {
        match self.config.fsync {
            FsyncPolicy::Interval(d) if self.dirty => {
                Some(self.last_sync_ms.saturating_add(millis(d)))
            }
            _ => None,
        }
    }

    /// Commits what is pending and fsyncs: the clean way to stop. (Dropping
    /// a writer loses its pending records and does not fsync.)
    pub fn close(mut self, now_ms: u64) -> Result<()> {
        self.commit(now_ms)?;
        self.sync(now_ms)
    }

    /// Deletes old closed segments of this writer's directory, see
    /// [`retain`]. The open segment is never deleted.
    pub fn retain(
        &self,
        policy: &RetentionPolicy,
        covered_seq: Seq,
        now_ms: u64,
    ) -> Result<Vec<RemovedSegment>> {
        retain(&self.dir, policy, covered_seq, now_ms)
    }

    /// Starts a new segment if the open one is due for rotation and holds
    /// an event; returns whether it did.
    fn rotate_if_due(&mut self, now_ms: u64) -> Result<bool> {
        let age = now_ms.saturating_sub(self.seg.header.created_ms);
        let due = self.rotate_requested
            || self.seg.len >= self.config.max_segment_bytes
            || age >= millis(self.config.max_segment_age);
        if !due || self.written_seq == self.seg.header.first_seq {
            // A segment without events is never closed: its successor would
            // need the same first seq, and so the same name.
            self.rotate_requested = false;
            return Ok(false);
        }
        if self.dirty {
            self.sync(now_ms)?;
        }
        let new = match create_segment(&self.dir, &self.config.node, self.written_seq, now_ms) {
            Ok(s) => s,
            Err(e) => {
                self.failed = Some(e.to_string());
                return Err(e);
            }
        };
        self.stats.bytes += new.len;
        self.stats.syncs += 1;
        // The old file is closed here, after its successor is durable.
        self.seg = new;
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
        let err = io_err(file)(e);
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
fn create_segment(dir: &Path, node: &NodeName, first_seq: Seq, now_ms: u64) -> Result<OpenSegment> {
    let header = SegmentHeader {
        node: node.clone(),
        first_seq,
        created_ms: now_ms,
    };
    let bytes = header.encode()?;
    let path = dir.join(segment_file_name(first_seq));
    let mut file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(&path)
        .map_err(io_err(&path))?;
    file.write_all(&bytes).map_err(io_err(&path))?;
    file.sync_all().map_err(io_err(&path))?;
    sync_dir(dir)?;
    Ok(OpenSegment {
        path,
        file,
        header,
        len: bytes.len() as u64,
    })
}

/// Recovers the newest segment `path` (see the module docs) and opens it
/// for appending. Returns it, the report and the bytes written (a rewritten
/// header).
fn recover(
    path: &Path,
    config: &WriterConfig,
    now_ms: u64,
) -> Result<(OpenSegment, RecoveryReport, u64)> {
    let strict = config.recovery == RecoveryMode::Strict;
    let mut report = RecoveryReport {
        segment: Some(path.to_path_buf()),
        ..RecoveryReport::default()
    };
    let mut reader = match BlockReader::open(path)? {
        Ok(r) => r,
        Err(damage) if damage.torn && !strict => {
            // Nothing in this file can be trusted, but its name says where
            // it starts: rewrite the header and go on with an empty segment.
            let first_seq = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(crate::segment::parse_segment_file_name)
                .ok_or_else(|| damage.clone().corrupt(path))?;
            let len = fs::metadata(path).map_err(io_err(path))?.len();
            let header = SegmentHeader {
                node: config.node.clone(),
                first_seq,
                created_ms: now_ms,
            };
            let bytes = header.encode()?;
            let mut file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_err(path))?;
            file.set_len(0).map_err(io_err(path))?;
            file.write_all(&bytes).map_err(io_err(path))?;
            file.sync_all().map_err(io_err(path))?;
            drop(file);
            let file = OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(io_err(path))?;
            report.valid_bytes = bytes.len() as u64;
            report.dropped_bytes = len;
            report.damage = Some((damage.offset, damage.reason));
            report.header_rewritten = true;
            report.next_seq = first_seq;
            let seg = OpenSegment {
                path: path.to_path_buf(),
                file,
                header,
                len: bytes.len() as u64,
            };
            return Ok((seg, report, bytes.len() as u64));
        }
        Err(damage) => return Err(damage.corrupt(path)),
    };
    let header = reader.header().clone();
    if header.node != config.node {
        return Err(LogError::InvalidInput(format!(
            "{} belongs to node {:?}, not {:?}",
            path.display(),
            header.node,
            config.node
        )));
    }
    let mut expected = header.first_seq;
    let mut valid = reader.pos();
    let file_len = reader.len();
    loop {
        match reader.next_block()? {
            Next::Block { offset, raw } => {
                let mut pos = 0;
                while let Some(rec) = crate::block::next_record(&raw, &mut pos) {
                    let rec = rec
                        .and_then(|b| LogRecord::decode(b).map_err(|e| e.to_string()))
                        .map_err(|reason| LogError::Corrupt {
                            file: path.to_path_buf(),
                            offset,
                            reason,
                        })?;
                    if let Err((expected, found)) = check_sequence(&rec, &mut expected) {
                        return Err(LogError::Gap {
                            file: path.to_path_buf(),
                            expected,
                            found,
                        });
                    }
                    report.records += 1;
                }
                valid = reader.pos();
            }
            Next::End => break,
            Next::Damaged(d) if d.torn && !strict => {
                report.dropped_bytes = file_len - d.offset;
                report.damage = Some((d.offset, d.reason));
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io_err(path))?;
                file.set_len(d.offset).map_err(io_err(path))?;
                file.sync_all().map_err(io_err(path))?;
                break;
            }
            Next::Damaged(d) => return Err(d.corrupt(path)),
        }
    }
    drop(reader);
    report.valid_bytes = valid;
    report.next_seq = expected;
    let file = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io_err(path))?;
    let seg = OpenSegment {
        path: path.to_path_buf(),
        file,
        header,
        len: valid,
    };
    Ok((seg, report, 0))
}
