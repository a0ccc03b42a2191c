//! Snapshots of a [`State`]: writing one, and rebuilding a state from one.
//!
//! A snapshot is exact: it holds the state as it was after log record `seq`
//! and nothing later, so `distkv-replay` can restore any later point by
//! replaying the log on top of it. To be exact it is written while the state
//! is locked for reading (0.2 – 0.35 s per million entries in release
//! builds, more when the values are scattered in memory: walking and
//! encoding; the blocks are compressed and written beside it); the final
//! flush, fsync and rename happen after the lock is released.
//!
//! Loading never applies a damaged snapshot halfway: items are applied to a
//! fresh state, which the caller only adopts when the whole file was read and
//! verified.

use std::path::Path as FsPath;

use distkv_log::LogLimits;
use distkv_model::chain::NameNumbers;
use distkv_model::NodeName;
use distkv_snapshot::{
    ItemRef, SnapshotError, SnapshotHeader, SnapshotInfo, SnapshotReader, SnapshotWriter,
};

use crate::state::{Digest, SeenBatch, State};

/// Writes `state` as a snapshot to `path`. `full = false` leaves out the
/// meta tree (the root's `None` child), like DistKV's client `save`.
///
/// `seq` is the log position the state reflects (the data directory's
/// disk log position; for a node without one, its in-memory log position).
pub fn write(
    state: &State,
    path: &FsPath,
    full: bool,
    created_ms: u64,
    seq: u64,
) -> Result<SnapshotWriterDone, SnapshotError> {
    write_with(state, path, full, created_ms, seq, None, |_| Ok(()))
}

/// [`write`], adding what it writes to `digest` if given (with `full`,
/// the state's digest: [`State::digest`], taken in the same walk), and
/// handing the writer to `begun` once the file has its header and before
/// any item: to [follow](SnapshotWriter::follow) the file as it is
/// written. An error of `begun` ends the write (the file is removed).
pub fn write_with(
    state: &State,
    path: &FsPath,
    full: bool,
    created_ms: u64,
    seq: u64,
    mut digest: Option<&mut Digest>,
    begun: impl FnOnce(&SnapshotWriter) -> Result<(), SnapshotError>,
) -> Result<SnapshotWriterDone, SnapshotError> {
    let header = SnapshotHeader {
        node: state.me().clone(),
        seq,
        created_ms,
        tock: state.tock().peek(),
    };
    let mut w = SnapshotWriter::create(path, &header)?;
    begun(&w)?;
    for (name, info) in state.nodes() {
        w.write_node(name, info.tick(), &info.superseded(), info.deleted())?;
        if let Some(d) = digest.as_deref_mut() {
            d.add_node(name, info.tick());
        }
    }
    let mut res = Ok(());
    state.for_each_entry(full, |e, path| {
        if res.is_ok() {
            let (value, chain) = (e.data(), e.chain());
            res = w.write_entry(path, value.as_deref(), chain.as_deref(), e.tock());
            if let Some(d) = digest.as_deref_mut() {
                d.add_entry(path, value.as_deref(), chain.as_deref(), e.tock());
            }
        }
    });
    res?;
    Ok(SnapshotWriterDone { writer: w, header })
}

/// A snapshot whose items are all written; [`SnapshotWriterDone::finish`]
/// makes it durable (call it after releasing the state lock).
pub struct SnapshotWriterDone {
    writer: SnapshotWriter,
    header: SnapshotHeader,
}

impl SnapshotWriterDone {
    /// The header written.
    pub fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    /// Writes the last items; the file is fsynced on the snapshot
    /// writer's thread meanwhile ([`SnapshotWriter::seal`]).
    pub fn seal(&mut self) -> Result<(), SnapshotError> {
        self.writer.seal()
    }

    /// Flushes, fsyncs and renames the snapshot into place.
    pub fn finish(self) -> Result<SnapshotInfo, SnapshotError> {
        self.writer.finish()
    }
}

/// Reads the snapshot at `path` into a new state for node `me` (whose event
/// log continues after the snapshot's position). Fails without a partial
/// result if the file is damaged anywhere.
pub fn load(
    path: &FsPath,
    me: &str,
    limits: LogLimits,
) -> Result<(State, SnapshotHeader), SnapshotError> {
    load_with_progress(path, me, limits, &mut |_, _| {})
}

/// [`load`], calling `progress(bytes_read, file_bytes)` each time it has
/// read another block.
pub fn load_with_progress(
    path: &FsPath,
    me: &str,
    limits: LogLimits,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(State, SnapshotHeader), SnapshotError> {
    let mut reader = SnapshotReader::open(path)?;
    let header = reader.header().clone();
    let mut st = State::new(me, limits);
    st.begin_in_order_restore();
    apply_items_with_progress(&mut st, &mut reader, progress)?;
    let st = end_load(st, path, me, limits, header.tock)?;
    Ok((st, header))
}

/// Ends the load, begun in the snapshot's order
/// ([`State::begin_in_order_restore`]), of the snapshot at `path` for node
/// `me`, whose tock is `tock`: the state, or, if its entries broke the
/// order — not a file our writers make (a path twice, a subtree in
/// parts) — the snapshot loaded again entry by entry, as any order loads,
/// with a warning.
pub(crate) fn end_load(
    mut st: State,
    path: &FsPath,
    me: &str,
    limits: LogLimits,
    tock: u64,
) -> Result<State, SnapshotError> {
    if !st.end_in_order_restore() {
        tracing::warn!(
            file = %path.display(),
            "snapshot entries out of order (a path twice, or a subtree in parts): loading it again the slow way"
        );
        st = State::new(me, limits);
        apply_items(&mut st, &mut SnapshotReader::open(path)?)?;
    }
    st.tock().seen(tock);
    Ok(st)
}

/// Restores one item of a snapshot; [`State::finish_restore`] with
/// `batch` follows the last.
pub(crate) fn restore_item(st: &mut State, item: ItemRef<'_>, batch: &mut SeenBatch) {
    match item {
        ItemRef::Node(n) => st.restore_node(&n.name, n.tick, &n.known, &n.deleted),
        ItemRef::Entry(e) => st.restore_entry_batched(e.path, e.value, e.chain, e.tock, batch),
    }
}

/// The digest ([`State::digest`]) of the state [`load`] would build from
/// the snapshot at `path` for node `me`, computed from the items as they
/// stream by, without building it: for checking a snapshot just written
/// against the state it was written from, with one state in memory.
///
/// It follows what loading does: every entry with a value or a chain
/// counts, each node's tick is the highest of its node item's and of the
/// chain links naming it ([`State::restore_node`],
/// [`State::restore_entry_batched`]), and node `me` is known with no tick
/// if nothing names it. A file that names a path twice (which loading
/// would reduce to the last) counts both, so it never matches a state.
/// Fails as `load` does if the file is damaged anywhere;
/// `progress(bytes_read, file_bytes)` is called after each block.
pub fn digest(
    path: &FsPath,
    me: &str,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u128, SnapshotError> {
    digest_of(SnapshotReader::open(path)?, me, false, progress)
}

/// [`digest`] of a file [`write`] writes, as `reader` reads it (one that
/// [follows](SnapshotWriter::follow) it as it is written too), its values
/// hashed as the file holds them ([`SnapshotReader::next_skimmed`]) rather
/// than decoded first: the same digest where each value is encoded as
/// [`codec::encode`](distkv_model::codec::encode) encodes it, as `write`
/// does it and as a state's digest hashes it; another one for a value
/// encoded otherwise (by another writer), whether it would load or not.
/// For checking a file just written against the state it was written
/// from.
pub fn digest_written(
    reader: SnapshotReader,
    me: &str,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u128, SnapshotError> {
    digest_of(reader, me, true, progress)
}

/// [`digest`] of what `reader` reads, `skimmed` or not.
fn digest_of(
    mut reader: SnapshotReader,
    me: &str,
    skimmed: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u128, SnapshotError> {
    let mut d = Digest::new();
    // Each node's tick by its number; a chain's names are found by their
    // address, the reader's names shared by its entries.
    let mut numbers = NameNumbers::default();
    let mut ticks: Vec<(NodeName, Option<u64>)> = Vec::new();
    let mut saw = |name: &NodeName, tick: Option<u64>| {
        let i = numbers.number(name) as usize;
        match ticks.get_mut(i) {
            Some((_, t)) => *t = (*t).max(tick),
            None => ticks.push((name.clone(), tick)),
        }
    };
    saw(&NodeName::from(me), None);
    let total = reader.info().bytes;
    let mut at = reader.bytes_read();
    loop {
        let item = match skimmed {
            true => reader.next_skimmed(),
            false => reader.next_ref(),
        };
        let Some(item) = item else { break };
        match item? {
            ItemRef::Node(n) => saw(&n.name, n.tick),
            ItemRef::Entry(e) => {
                for l in e.chain.iter().flat_map(|c| c.links()) {
                    saw(&l.node, Some(l.tick));
                }
                if let Some(v) = e.encoded {
                    d.add_encoded_entry(e.path, Some(v), e.chain.as_ref(), e.tock);
                } else if e.value.is_some() || e.chain.is_some() {
                    d.add_entry(e.path, e.value.as_ref(), e.chain.as_ref(), e.tock);
                }
            }
        }
        if reader.bytes_read() != at {
            at = reader.bytes_read();
            progress(at, total);
        }
    }
    for (name, tick) in &ticks {
        d.add_node(name, *tick);
    }
    Ok(d.value())
}

/// Applies every item of `reader` to `st` (nodes, then entries).
pub fn apply_items(st: &mut State, reader: &mut SnapshotReader) -> Result<(), SnapshotError> {
    apply_items_with_progress(st, reader, &mut |_, _| {})
}

fn apply_items_with_progress(
    st: &mut State,
    reader: &mut SnapshotReader,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), SnapshotError> {
    let total = reader.info().bytes;
    let mut at = reader.bytes_read();
    let mut batch = SeenBatch::default();
    while let Some(item) = reader.next_ref() {
        restore_item(st, item?, &mut batch);
        if reader.bytes_read() != at {
            at = reader.bytes_read();
            progress(at, total);
        }
    }
    st.finish_restore(batch);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use distkv_model::{path, Value};

    #[test]
    fn snapshot_round_trip_reproduces_the_state_and_log_position() -> Result<(), SnapshotError> {
        let dir = std::env::temp_dir().join(format!("distkv-snap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("s.dkvsnap");
        let mut st = State::new("n1", LogLimits::default());
        st.make_ready();
        for i in 0..100i64 {
            st.local_change(&path!["a", i], Some(Value::Int(i)))
                .unwrap();
        }
        st.local_change(&path!["a", 5i64], None).unwrap();
        st.local_change(&path![Value::Nil, "meta"], Some(Value::Int(1)))
            .unwrap();
        write(&st, &file, true, 0, 102)?.finish()?;
        let (back, header) = load(&file, "n1", LogLimits::default())?;
        assert_eq!(header.seq, 102);
        assert_eq!(back.digest(), st.digest());
        assert_eq!(back.tick(), Some(102));
        // Without `full`, the meta tree is left out.
        write(&st, &file, false, 0, 102)?.finish()?;
        let (back, _) = load(&file, "n1", LogLimits::default())?;
        assert!(back.entry(&[Value::Nil, Value::str("meta")]).is_none());
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }

    #[test]
    fn a_files_streamed_digest_is_the_digest_of_the_state_it_loads_into(
    ) -> Result<(), Box<dyn std::error::Error>> {
        use distkv_model::{Chain, Link, RangeSet};
        let dir = std::env::temp_dir().join(format!("distkv-snap-digest-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        // A node's state, written as a node does.
        let file = dir.join("s.dkvsnap");
        let mut st = State::new("n1", LogLimits::default());
        st.make_ready();
        for i in 0..300i64 {
            st.local_change(&path!["a", i % 50, i], Some(Value::Int(i)))?;
        }
        st.local_change(&path!["a", 5i64, 5i64], None)?;
        st.local_change(&path![Value::Nil, "meta"], Some(Value::Int(1)))?;
        write(&st, &file, true, 0, 302)?.finish()?;
        assert_eq!(digest(&file, "n1", &mut |_, _| {})?, st.digest());
        // Taken in the walk that writes it, and by a reader that follows
        // the file as it is written: the same.
        let mut walked = Digest::new();
        let mut followed = None;
        write_with(&st, &file, true, 0, 302, Some(&mut walked), |w| {
            followed = Some(w.follow()?);
            Ok(())
        })?
        .finish()?;
        let followed = followed.ok_or("no follower")?;
        assert_eq!(walked.value(), st.digest());
        assert_eq!(digest_written(followed, "n1", &mut |_, _| {})?, st.digest());
        // Written by hand: a node whose chain ticks exceed its item's, one
        // named by chains only, an entry with neither value nor chain,
        // and a reader that is not the writer.
        let file = dir.join("h.dkvsnap");
        let header = distkv_snapshot::SnapshotHeader {
            node: "n1".into(),
            seq: 9,
            created_ms: 0,
            tock: 40,
        };
        let mut w = SnapshotWriter::create(&file, &header)?;
        let none = RangeSet::new();
        w.write_node("n2", Some(3), &none, &none)?;
        let chain = Chain::from_links(vec![
            Link {
                node: "n2".into(),
                tick: 7,
            },
            Link {
                node: "n3".into(),
                tick: 2,
            },
        ]);
        w.write_entry(&path!["x"], Some(&Value::str("v")), chain.as_ref(), 30)?;
        w.write_entry(&path!["x", "y"], None, None, 31)?;
        w.write_entry(&path!["z"], None, chain.as_ref(), 32)?;
        w.finish()?;
        for me in ["n1", "n2"] {
            let (back, _) = load(&file, me, LogLimits::default())?;
            assert_eq!(digest(&file, me, &mut |_, _| {})?, back.digest(), "{me}");
            let written = digest_written(SnapshotReader::open(&file)?, me, &mut |_, _| {})?;
            assert_eq!(written, back.digest(), "{me}");
        }
        // Damage anywhere fails it, as it fails loading.
        let mut bytes = std::fs::read(&file)?;
        let at = bytes.len() - 3;
        bytes[at] ^= 0x01;
        std::fs::write(&file, &bytes)?;
        assert!(load(&file, "n1", LogLimits::default()).is_err());
        assert!(digest(&file, "n1", &mut |_, _| {}).is_err());
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }

    #[test]
    fn a_snapshot_out_of_order_loads_as_entry_by_entry() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("distkv-snap-order-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let header = distkv_snapshot::SnapshotHeader {
            node: "n1".into(),
            seq: 9,
            created_ms: 0,
            tock: 40,
        };
        // A subtree in parts (`a.x`), then a path twice (`a.y`): no writer
        // of ours makes that, any order loads.
        let file = dir.join("o.dkvsnap");
        let mut w = SnapshotWriter::create(&file, &header)?;
        let entries = [
            (path!["a", "x", 1i64], 10),
            (path!["a", "y"], 11),
            (path!["a", "x", 2i64], 12),
            (path!["a", "y"], 13),
        ];
        for (p, tick) in &entries {
            let chain = distkv_model::Chain::single("n1".into(), *tick);
            w.write_entry(p, Some(&Value::Int(*tick as i64)), Some(&chain), *tick)?;
        }
        w.finish()?;
        let (back, _) = load(&file, "n1", LogLimits::default())?;
        let mut want = State::new("n1", LogLimits::default());
        apply_items(&mut want, &mut SnapshotReader::open(&file)?)?;
        want.tock().seen(header.tock);
        assert_eq!(back.digest(), want.digest());
        let data = |p: &[Value]| back.entry(p).and_then(|e| e.data_cloned());
        assert_eq!(data(&path!["a", "y"]), Some(Value::Int(13)), "the last one");
        assert_eq!(data(&path!["a", "x", 1i64]), Some(Value::Int(10)));
        assert_eq!(data(&path!["a", "x", 2i64]), Some(Value::Int(12)));
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }

    #[test]
    fn loading_reports_progress_block_by_block_to_the_file_size() -> Result<(), SnapshotError> {
        let dir = std::env::temp_dir().join(format!("distkv-snap-progress-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("s.dkvsnap");
        let mut st = State::new("n1", LogLimits::default());
        st.make_ready();
        for i in 0..20_000i64 {
            st.local_change(&path!["k", i], Some(Value::str(&format!("value {i:0>40}"))))
                .unwrap();
        }
        write(&st, &file, true, 0, 20_000)?.finish()?;
        let mut seen = Vec::new();
        let (back, _) = load_with_progress(&file, "n1", LogLimits::default(), &mut |at, of| {
            seen.push((at, of))
        })?;
        assert_eq!(back.digest(), st.digest());
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        assert!(seen.len() > 2, "one report per block: {seen:?}");
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "{seen:?}");
        assert!(seen.iter().all(|&(_, of)| of == size));
        assert_eq!(seen.last().map(|s| s.0), Some(size));
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }
}
