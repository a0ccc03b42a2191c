//! Retention: deleting closed segments that are old or over the byte budget.
//!
//! [`retain`] deletes whole segments, oldest first, and stops at the first
//! segment it must keep, so what remains is always a gap-free run of
//! segments ending with the open one. A segment is kept if it is the newest
//! (open) segment, if it holds any record with seq > `covered_seq` (the
//! position of the newest durable snapshot: deleting it would lose records
//! nothing else holds), or if neither limit asks for its deletion.
//!
//! A closed segment's records run from its first seq up to the next
//! segment's first seq − 1, and it was closed when the next segment was
//! created: its age is measured from the next segment's `created_ms`, so a
//! segment is "older than `max_age`" only when all its records are.
//!
//! Ages here are wall-clock times, unlike the writer's intervals: a file's
//! age must survive restarts, and only the wall clock stamped in its header
//! does. A wall clock stepped back delays deletions by age; one stepped
//! forward makes them early. Neither can delete a segment a snapshot does
//! not cover, and the byte budget does not depend on any clock.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{io_err, Result};
use crate::segment::{list_segments, read_segment_header, sync_dir};
use crate::Seq;

/// Which closed segments may go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Delete closed segments closed longer ago than this.
    pub max_age: Option<Duration>,
    /// Delete the oldest closed segments while all segments together are
    /// larger than this many bytes.
    pub max_total_bytes: Option<u64>,
}

/// A segment [`retain`] deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemovedSegment {
    /// Its path.
    pub path: PathBuf,
    /// Its first record.
    pub first_seq: Seq,
    /// Its last record.
    pub last_seq: Seq,
    /// Its size.
    pub bytes: u64,
}

/// Deletes closed segments of `dir` as `policy` asks, oldest first, never
/// one holding a record with seq > `covered_seq` and never the newest
/// (open) one; fsyncs the directory if it deleted any. `now_ms` is the
/// caller's wall clock (ms since the Unix epoch). Call it from the writer's thread (or
/// [`LogWriter::retain`](crate::LogWriter::retain)) so that it does not
/// race a rotation.
pub fn retain(
    dir: &Path,
    policy: &RetentionPolicy,
    covered_seq: Seq,
    now_ms: u64,
) -> Result<Vec<RemovedSegment>> {
    let segments = list_segments(dir)?;
    let mut total: u64 = segments.iter().map(|s| s.bytes).sum();
    let mut removed = Vec::new();
    for pair in segments.windows(2) {
        let (seg, next) = (&pair[0], &pair[1]);
        let last_seq = next.first_seq - 1;
        if last_seq > covered_seq {
            break;
        }
        let over_budget = policy.max_total_bytes.is_some_and(|b| total > b);
        let too_old = !over_budget
            && match policy.max_age {
                None => false,
                Some(age) => {
                    let closed_ms = read_segment_header(&next.path)?.created_ms;
                    let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
                    now_ms.saturating_sub(closed_ms) > age_ms
                }
            };
        if !(over_budget || too_old) {
            break;
        }
        fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
        total -= seg.bytes;
        removed.push(RemovedSegment {
            path: seg.path.clone(),
            first_seq: seg.first_seq,
            last_seq,
            bytes: seg.bytes,
        });
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    Ok(removed)
}
