//! Keeping damaged bytes, and salvaging a segment whose damage is followed
//! by valid blocks.
//!
//! Nothing in this crate cuts or rewrites a segment without keeping what
//! it removes. Kept bytes go to the `damaged/` subdirectory of the log
//! directory ([`DAMAGED_DIR`]), which readers and retention never look at
//! and nothing deletes (an operator does, once the node is healthy):
//!
//! * `<segment name>.torn-<offset>-<ms>` — the bytes a torn tail cut off
//!   (from byte `offset` to the end of the file; for a torn header, the
//!   whole file);
//! * `<segment name>.damaged-<ms>` — the whole damaged file as it was
//!   before a salvage rewrote it.
//!
//! `<ms>` is the wall-clock time of the recovery, ms since the Unix epoch;
//! `-1`, `-2`, … is appended if that name is taken.
//!
//! **Salvage** ([`salvage_segment`]) reads a segment in
//! [`RecoveryMode::Salvage`], which goes on after damage at the next valid
//! block (see [`crate::reader`] and the `scan` module), and writes every
//! record it yields to `<segment name>.salvage`: the valid records before
//! and after the damage, with a [`LogRecord::Lost`] where events were
//! lost. Then it keeps the damaged file (a hard link, or a copy where links
//! are not possible), fsyncs, and renames the new file over the segment,
//! fsyncing the directory. A crash at any point leaves either the damaged
//! segment (salvaged again at the next start, kept again) or the salvaged
//! one under the segment's name; a leftover `.salvage` file is ignored and
//! overwritten by the next salvage.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::block::{push_record, BlockEncoder};
use crate::error::{io_err, LogError, Result};
use crate::reader::{SegmentReader, Skipped, TornTail};
use crate::record::LogRecord;
use crate::segment::{parse_segment_file_name, sync_dir, SegmentHeader};
use crate::writer::{RecoveryMode, WriterConfig};
use crate::Seq;

/// The subdirectory of a log directory where damaged bytes are kept.
pub const DAMAGED_DIR: &str = "damaged";

/// Records areas of a salvaged segment are written in blocks of about
/// this size.
const SALVAGE_BLOCK: usize = 1 << 20;

/// What [`salvage_segment`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SalvageReport {
    /// The segment, rewritten.
    pub file: PathBuf,
    /// Where the damaged file was kept.
    pub kept: PathBuf,
    /// The damage skipped, with what each took.
    pub skipped: Vec<Skipped>,
    /// A torn tail after the last valid block, left out.
    pub torn: Option<TornTail>,
    /// Records kept (lost records included).
    pub records: u64,
}

impl SalvageReport {
    /// The events lost, in all.
    pub fn lost_events(&self) -> u64 {
        self.skipped
            .iter()
            .filter_map(|s| s.lost.as_ref())
            .map(|l| l.end.saturating_sub(l.start))
            .sum()
    }
}

/// Keeps the bytes of segment `path` (in log directory `dir`) from
/// `offset` to the end in `damaged/`, fsynced, before they are cut off.
/// Returns where (`None` when there is nothing to keep).
pub fn keep_tail(dir: &Path, path: &Path, offset: u64, wall_ms: u64) -> Result<Option<PathBuf>> {
    let mut src = File::open(path).map_err(io_err(path))?;
    let len = src.metadata().map_err(io_err(path))?.len();
    if offset >= len {
        return Ok(None);
    }
    let (kept, mut out) = create_kept(dir, path, &format!("torn-{offset}-{wall_ms}"))?;
    src.seek(SeekFrom::Start(offset)).map_err(io_err(path))?;
    std::io::copy(&mut src.take(len - offset), &mut out).map_err(io_err(&kept))?;
    out.sync_all().map_err(io_err(&kept))?;
    sync_dir(&dir.join(DAMAGED_DIR))?;
    Ok(Some(kept))
}

/// Rewrites segment `path` of log directory `dir` without its damage (see
/// the module docs): every record a reader in [`RecoveryMode::Salvage`]
/// yields, lost records included. `end` is the seq the next segment starts
/// at, for a closed segment (`None`: the newest, whose end may be torn).
/// `config` gives the node (for a header that must be rebuilt) and the
/// compression. Returns `None`, and changes nothing, when the segment has
/// no damage that valid blocks follow (one read of the file; a salvage
/// reads it twice).
pub fn salvage_segment(
    dir: &Path,
    path: &Path,
    config: &WriterConfig,
    end: Option<Seq>,
    wall_ms: u64,
) -> Result<Option<SalvageReport>> {
    // A first pass finds out whether there is anything to salvage, without
    // writing.
    let mut probe = SegmentReader::open_with_end(path, RecoveryMode::Salvage, end)?;
    for rec in probe.by_ref() {
        rec?;
    }
    if probe.skipped().is_empty() {
        return Ok(None);
    }
    drop(probe);
    let mut reader = SegmentReader::open_with_end(path, RecoveryMode::Salvage, end)?;
    let kept = unused_name(dir, path, &format!("damaged-{wall_ms}"));
    let header = match reader.header() {
        Some(h) => h.clone(),
        None => SegmentHeader {
            node: config.node.clone(),
            first_seq: reader.next_seq(),
            created_ms: wall_ms,
        },
    };
    let tmp = salvage_file(path)?;
    let mut out = SalvageWriter {
        file: OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?,
        path: tmp.clone(),
        encoder: BlockEncoder::new(config.zstd_level, config.compress_min_bytes),
        area: Vec::new(),
        scratch: Vec::new(),
    };
    out.write(&header.encode()?)?;
    let mut records = 0;
    for rec in reader.by_ref() {
        let mut record = rec?.record;
        if let LogRecord::Lost { why, .. } = &mut record {
            why.push_str(&format!("; the damaged file is kept as {}", kept.display()));
        }
        out.push(&record)?;
        records += 1;
    }
    out.finish()?;
    keep_whole(dir, path, &kept)?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    sync_dir(dir)?;
    Ok(Some(SalvageReport {
        file: path.to_path_buf(),
        kept,
        skipped: reader.skipped().to_vec(),
        torn: reader.torn_tail().cloned(),
        records,
    }))
}

/// The temporary file a salvage of `path` writes.
fn salvage_file(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| parse_segment_file_name(n).is_some())
        .ok_or_else(|| {
            LogError::InvalidInput(format!("{} is not a segment file name", path.display()))
        })?;
    Ok(path.with_file_name(format!("{name}.salvage")))
}

/// Writes the blocks of a salvaged segment.
struct SalvageWriter {
    file: File,
    path: PathBuf,
    encoder: BlockEncoder,
    /// The records area of the block being filled.
    area: Vec<u8>,
    scratch: Vec<u8>,
}

impl SalvageWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file.write_all(bytes).map_err(io_err(&self.path))
    }

    fn push(&mut self, record: &LogRecord) -> Result<()> {
        self.scratch.clear();
        record.encode(&mut self.scratch);
        if !self.area.is_empty() && self.area.len() + 4 + self.scratch.len() > SALVAGE_BLOCK {
            self.flush()?;
        }
        push_record(&mut self.area, &self.scratch);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.area.is_empty() {
            return Ok(());
        }
        let (block, _) = self.encoder.encode(&self.area);
        self.file.write_all(block).map_err(io_err(&self.path))?;
        self.area.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        self.flush()?;
        self.file.sync_all().map_err(io_err(&self.path))
    }
}

/// Keeps the whole file `path` as `kept`: a hard link, or a copy where
/// links are not possible; durable before it returns.
fn keep_whole(dir: &Path, path: &Path, kept: &Path) -> Result<()> {
    ensure_damaged_dir(dir)?;
    if fs::hard_link(path, kept).is_err() {
        let mut src = File::open(path).map_err(io_err(path))?;
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(kept)
            .map_err(io_err(kept))?;
        std::io::copy(&mut src, &mut out).map_err(io_err(kept))?;
        out.sync_all().map_err(io_err(kept))?;
    }
    sync_dir(&dir.join(DAMAGED_DIR))
}

/// A new file in `damaged/` for a part of segment `path`, named with
/// `tag`.
fn create_kept(dir: &Path, path: &Path, tag: &str) -> Result<(PathBuf, File)> {
    ensure_damaged_dir(dir)?;
    loop {
        let kept = unused_name(dir, path, tag);
        match OpenOptions::new().write(true).create_new(true).open(&kept) {
            Ok(f) => return Ok((kept, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(&kept)(e)),
        }
    }
}

/// Moves the file `path` of log directory `dir` into `damaged/` as
/// `<name>.<tag>`, durably; returns where.
pub(crate) fn keep_aside(dir: &Path, path: &Path, tag: &str) -> Result<PathBuf> {
    ensure_damaged_dir(dir)?;
    let kept = unused_name(dir, path, tag);
    fs::rename(path, &kept).map_err(io_err(path))?;
    sync_dir(&dir.join(DAMAGED_DIR))?;
    sync_dir(dir)?;
    Ok(kept)
}

/// Creates `damaged/` in log directory `dir` if needed, durably.
fn ensure_damaged_dir(dir: &Path) -> Result<()> {
    let damaged = dir.join(DAMAGED_DIR);
    if !damaged.is_dir() {
        fs::create_dir_all(&damaged).map_err(io_err(&damaged))?;
        sync_dir(dir)?;
    }
    Ok(())
}

/// `damaged/<segment name>.<tag>` (with `-1`, `-2`, … if taken).
fn unused_name(dir: &Path, path: &Path, tag: &str) -> PathBuf {
    let damaged = dir.join(DAMAGED_DIR);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = damaged.join(format!("{name}.{tag}"));
    let mut candidate = base.clone();
    let mut k = 0;
    while candidate.exists() {
        k += 1;
        candidate = PathBuf::from(format!("{}-{k}", base.display()));
    }
    candidate
}
