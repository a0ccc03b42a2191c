//! Reading a history on a thread of its own, ahead of the replay.
//!
//! A replay is two jobs of about the same size: reading its inputs (each
//! block's checksum and decompression, each record's decoding) and applying
//! the records to a state, one event after the other. [`Ahead`] runs a
//! [`HistoryStream`] on a thread of its own and hands its records over in
//! batches, so that reading takes a core of its own (docs/perf.md, "A
//! restore reads on a thread of its own").
//!
//! What waits is bounded: a batch closes at [`BATCH_RECORDS`] records or
//! once its records took [`BATCH_BYTES`] of input, and at most [`QUEUED`]
//! batches wait, besides the one being filled and the one being replayed.
//! The records come in the stream's order; after an error, none: the
//! thread stops there, as the replay does. A panic of the reading thread
//! is resumed on the replaying one, never taken for the end of the
//! stream. Dropping an [`Ahead`] stops its thread at its next batch.
//!
//! The events the replay is done with, and the values they replaced
//! (`State::replay_swap`), go back to the reading thread to be dropped
//! ([`Ahead::spent`]), in batches as they came: their paths, names and
//! values were allocated and counted there, and freeing them there frees
//! them into the heap the next records are decoded into, with no count's
//! cache line passed between the cores. So do the state's first runs of
//! seen ticks ([`Ahead::seen`]), which the stream's state records then
//! leave out of their sets of superseded ticks. Each batch's node names,
//! path strings and file names are its own (`HistoryStream::share_anew`): the
//! replay counts references to one batch's while the thread decodes the
//! next one's, never to the same at once.
//!
//! A node's start reads ahead too, its snapshot as well as its log
//! (`distkv_core::persist::recover`, docs/perf.md, "A node's start reads
//! on a thread of its own").

use std::ops::Range;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};
use std::thread::JoinHandle;

use distkv_core::persist::{spawn_with, Spent};
use distkv_log::Seq;
use distkv_model::{NodeName, Packed, UpdateEvent};

use crate::error::Result;
use crate::source::{HistoryStream, Rec};

/// Records in a batch at most.
const BATCH_RECORDS: usize = 1024;

/// A batch closes once its records took this many bytes of input.
const BATCH_BYTES: u64 = 256 << 10;

/// Batches waiting for the replay at most.
const QUEUED: usize = 4;

/// What the replay sends back to the reading thread.
enum Back {
    /// Events, and values they replaced, to drop there.
    Spent(Spent),
    /// The state's first runs of seen ticks ([`Ahead::seen`]).
    Seen(Vec<(NodeName, Range<Seq>)>),
}

/// Records read on the thread, and where the stream was after them.
struct Batch {
    recs: Vec<Result<Rec>>,
    position: u64,
    seeked: Option<u64>,
}

/// A [`HistoryStream`] read on a thread of its own (see the module docs):
/// an iterator over the same records.
pub(crate) struct Ahead {
    way: Way,
    /// Events the replay is done with, and the values they replaced, for
    /// the reading thread to drop.
    spent: Spent,
    /// The stream's position after the records handed over so far.
    position: u64,
    seeked: Option<u64>,
}

enum Way {
    /// No thread (the system gave none): read here.
    Here(Box<HistoryStream>),
    There {
        /// `None` once closed: the thread stops at its next batch.
        batches: Option<Receiver<Batch>>,
        batch: std::vec::IntoIter<Result<Rec>>,
        /// Where spent events go to be dropped, and the seen ticks.
        back: Sender<Back>,
        thread: Option<JoinHandle<()>>,
    },
}

impl Ahead {
    /// Starts reading `stream` on a thread of its own (here, if the system
    /// gives no thread).
    pub(crate) fn start(stream: HistoryStream) -> Ahead {
        let position = stream.position();
        let seeked = stream.seeked();
        let (tx, rx) = sync_channel::<Batch>(QUEUED);
        let (back, from_replay) = channel::<Back>();
        let spawned = spawn_with("distkv-read", stream, move |mut stream: HistoryStream| {
            loop {
                while let Ok(msg) = from_replay.try_recv() {
                    match msg {
                        Back::Spent(spent) => spent.drop_here(),
                        Back::Seen(runs) => stream.leave_out_known_within(&runs),
                    }
                }
                // The replay counts references to the names, strings
                // and file names of the batch before while this one is
                // read.
                stream.share_anew();
                let from = stream.position();
                let mut recs = Vec::with_capacity(BATCH_RECORDS);
                let mut last = false;
                while recs.len() < BATCH_RECORDS
                    && stream.position().saturating_sub(from) < BATCH_BYTES
                {
                    match stream.next() {
                        Some(r) => {
                            last = r.is_err();
                            recs.push(r);
                            if last {
                                break;
                            }
                        }
                        None => {
                            last = true;
                            break;
                        }
                    }
                }
                let batch = Batch {
                    recs,
                    position: stream.position(),
                    seeked: stream.seeked(),
                };
                // An error from `send`: nobody replays any more.
                if tx.send(batch).is_err() || last {
                    return;
                }
            }
        });
        match spawned {
            Ok(thread) => Ahead {
                way: Way::There {
                    batches: Some(rx),
                    batch: Vec::new().into_iter(),
                    back,
                    thread: Some(thread),
                },
                spent: Spent::default(),
                position,
                seeked,
            },
            // No thread: read here.
            Err(stream) => Ahead::here(stream, position, seeked),
        }
    }

    fn here(stream: HistoryStream, position: u64, seeked: Option<u64>) -> Ahead {
        Ahead {
            way: Way::Here(Box::new(stream)),
            spent: Spent::default(),
            position,
            seeked,
        }
    }

    /// Takes back an event of this stream the replay is done with: it is
    /// dropped on the reading thread, with the next [`BATCH_RECORDS`]
    /// (here at once, when read here).
    pub(crate) fn spent(&mut self, event: UpdateEvent, replaced: Option<Packed>) {
        let Way::There { back, .. } = &self.way else {
            return;
        };
        if let Some(batch) = self.spent.push(event, replaced, BATCH_RECORDS) {
            // A thread that has ended leaves them to be dropped here.
            let _ = back.send(Back::Spent(batch));
        }
    }

    /// Tells the stream the replayed state's first runs of seen ticks,
    /// which its state records may leave out
    /// ([`HistoryStream::leave_out_known_within`]); on the reading thread
    /// from its next batch on, which is never more than the state has seen
    /// when the records come.
    pub(crate) fn seen(&mut self, runs: Vec<(NodeName, Range<Seq>)>) {
        match &mut self.way {
            Way::Here(s) => s.leave_out_known_within(&runs),
            Way::There { back, .. } => {
                let _ = back.send(Back::Seen(runs));
            }
        }
    }

    /// Bytes of input read so far ([`HistoryStream::position`]), up to the
    /// records handed over.
    pub(crate) fn position(&self) -> u64 {
        match &self.way {
            Way::Here(s) => HistoryStream::position(s),
            Way::There { .. } => self.position,
        }
    }

    /// [`HistoryStream::seeked`].
    pub(crate) fn seeked(&self) -> Option<u64> {
        match &self.way {
            Way::Here(s) => s.seeked(),
            Way::There { .. } => self.seeked,
        }
    }

    /// Stops the thread (at its next batch) and waits for it; the records
    /// not yet taken are dropped, and none come after. A panic of the
    /// reading thread is resumed here.
    pub(crate) fn stop(&mut self) {
        if let Err(panic) = self.close() {
            std::panic::resume_unwind(panic);
        }
    }

    /// Records read and not yet handed out, as far as they are at hand
    /// (the rest of the current batch; none when read here).
    pub(crate) fn upcoming(&self) -> &[Result<Rec>] {
        match &self.way {
            Way::Here(_) => &[],
            Way::There { batch, .. } => batch.as_slice(),
        }
    }

    /// Closes the channel (the thread stops at its next batch), drops what
    /// was not taken and waits for the thread: how it ended.
    fn close(&mut self) -> std::thread::Result<()> {
        match &mut self.way {
            Way::Here(_) => Ok(()),
            Way::There {
                batches,
                batch,
                thread,
                ..
            } => {
                *batches = None;
                *batch = Vec::new().into_iter();
                thread.take().map_or(Ok(()), JoinHandle::join)
            }
        }
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        // A panic of the reader is for `next` or `stop` to resume, not
        // for a replay that already ended.
        let _ = self.close();
    }
}

impl Iterator for Ahead {
    type Item = Result<Rec>;

    fn next(&mut self) -> Option<Result<Rec>> {
        loop {
            let got = match &mut self.way {
                Way::Here(s) => return s.next(),
                Way::There { batches, batch, .. } => {
                    if let Some(r) = batch.next() {
                        return Some(r);
                    }
                    batches.as_ref()?.recv()
                }
            };
            match (got, &mut self.way) {
                (Ok(b), Way::There { batch, .. }) => {
                    self.position = b.position;
                    self.seeked = b.seeked;
                    *batch = b.recs.into_iter();
                }
                // The thread ended: after its last batch, or in a panic,
                // which `stop` resumes here.
                _ => {
                    self.stop();
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{inventory, Cut, StreamSpec};
    use distkv_log::writer::{FsyncPolicy, LogWriter, Now, WriterConfig};
    use distkv_model::{path, Chain, NodeName, UpdateEvent, Value};

    /// A log of `n` events in blocks of 100, its newest block torn (a
    /// crash's leftover: the stream ends with a damage record instead).
    fn log(dir: &std::path::Path, n: u64) -> anyhow::Result<()> {
        let mut cfg = WriterConfig::new("n1");
        cfg.fsync = FsyncPolicy::Never;
        let mut w = LogWriter::open(dir, cfg, Now::at(1))?;
        for t in 1..=n {
            let ev = UpdateEvent {
                path: path!["k", t % 97],
                chain: Chain::single(NodeName::from("n1"), t),
                value: Some(Value::str(&"v".repeat(t as usize % 300))),
                tock: t,
            };
            w.append_event(t, &ev)?;
            if t % 100 == 0 {
                w.commit(Now::at(t))?;
            }
        }
        w.close(Now::at(n + 1))?;
        let seg = std::fs::read_dir(dir)?
            .next()
            .ok_or_else(|| anyhow::anyhow!("no segment"))??
            .path();
        let len = std::fs::metadata(&seg)?.len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)?
            .set_len(len - 7)?;
        Ok(())
    }

    fn stream(dir: &std::path::Path) -> anyhow::Result<HistoryStream> {
        let inv = inventory(&[dir.to_path_buf()])?;
        let spec = StreamSpec {
            snapshot: None,
            from_seq: 0,
            verify_all: false,
            cut: Cut::None,
            strict: false,
            seek: false,
        };
        Ok(HistoryStream::new(&inv.histories[0], spec)?)
    }

    #[test]
    fn records_come_as_the_stream_gives_them() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        log(tmp.path(), 5_000)?;
        let mut here = stream(tmp.path())?;
        let mut ahead = Ahead::start(stream(tmp.path())?);
        assert!(matches!(ahead.way, Way::There { .. }));
        let mut n = 0;
        loop {
            let (a, b) = (here.next(), ahead.next());
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "record {n}");
            // Events and replaced values handed back (to be dropped there)
            // change nothing.
            if let Some(Ok(Rec::Event { event, .. })) = b {
                let replaced = Packed::new(distkv_model::Value::str(&format!("old {n}")));
                ahead.spent(event, Some(replaced));
            }
            // Never ahead of what the stream had read by then by more than
            // the batches that may wait.
            assert!(ahead.position() >= here.position() || a.is_none());
            if a.is_none() {
                break;
            }
            n += 1;
        }
        // The events before the torn block, and the damage.
        assert_eq!(n, 4_901);
        assert_eq!(ahead.position(), here.position());
        assert_eq!(ahead.next().map(|r| r.is_ok()), None);
        Ok(())
    }

    #[test]
    fn dropped_early_it_stops() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        log(tmp.path(), 20_000)?;
        let mut ahead = Ahead::start(stream(tmp.path())?);
        assert!(ahead.next().is_some_and(|r| r.is_ok()));
        // The thread waits on a full queue: dropping (or stopping) must
        // not wait for it to read the rest.
        ahead.stop();
        assert!(ahead.next().is_none());
        drop(Ahead::start(stream(tmp.path())?));
        Ok(())
    }
}
