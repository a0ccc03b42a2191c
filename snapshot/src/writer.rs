//! Writing a snapshot: stream items in, get a durable file out.
//!
//! [`SnapshotWriter`] owns the temporary file `<final>.tmp` until
//! [`SnapshotWriter::finish`] renames it over the final name, so a file
//! under the final name is always complete: written, fsynced, then renamed,
//! then the directory fsynced.
//!
//! Full blocks are compressed, checksummed and written by a thread of the
//! writer's own, in order, while the caller encodes the next ones: a node
//! writes its snapshot while changes wait for it, and compressing is a third
//! of the work. Memory stays bounded whatever the state's size: the block
//! being filled, [`BLOCKS_AHEAD`] full ones waiting, the one being
//! compressed and its compressed form, and one encoded item.
//!
//! Items are validated and encoded before anything is buffered, so a
//! rejected item ([`SnapshotError::InvalidInput`]) leaves the writer usable;
//! an I/O failure poisons it (every later call fails) and dropping it
//! removes the temporary file. The thread's failure is reported by the
//! first call after it (at the latest by `finish`). One writer per final
//! path at a time: a second one would share the temporary file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use distkv_model::{Chain, RangeSet, Value};

use crate::block::{block_crc, encode_block_header, DEFAULT_BLOCK_SIZE, MAX_BLOCK_LEN};
use crate::error::{Result, SnapshotError};
use crate::header::SnapshotHeader;
use crate::item::{Encoder, Item};
use crate::reader::SnapshotReader;

/// How a snapshot is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOptions {
    /// zstd compression level (default 3; zstd accepts 1 to 22, and
    /// negative levels for faster, weaker compression).
    pub level: i32,
    /// Target uncompressed payload size of a block, in bytes (default
    /// 256 KiB, at most [`MAX_BLOCK_LEN`]). A reader holds one such block
    /// in memory; larger blocks compress a little better.
    pub block_size: usize,
}

impl Default for WriteOptions {
    fn default() -> WriteOptions {
        WriteOptions {
            level: 3,
            block_size: DEFAULT_BLOCK_SIZE,
        }
    }
}

/// What a finished (or verified) snapshot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Size of the file in bytes.
    pub bytes: u64,
    /// Number of node items.
    pub nodes: u64,
    /// Number of entry items.
    pub entries: u64,
    /// Number of blocks.
    pub blocks: u64,
}

/// Streams nodes and entries into a new snapshot file.
///
/// Call [`write_node`](Self::write_node) for every node, then
/// [`write_entry`](Self::write_entry) for every entry in tree order, then
/// [`finish`](Self::finish). Nothing appears under the final name before
/// `finish` returns `Ok`.
#[derive(Debug)]
pub struct SnapshotWriter {
    final_path: PathBuf,
    tmp_path: PathBuf,
    /// The thread writing the blocks; `None` once finished (or failed).
    worker: Option<Worker>,
    enc: Encoder,
    block_size: usize,
    /// The block being filled: length-prefixed items.
    block: Vec<u8>,
    /// One encoded item.
    item: Vec<u8>,
    /// An I/O error happened: the file's contents are unknown.
    poisoned: bool,
    /// Every item is written: only [`SnapshotWriter::finish`] is left.
    sealed: bool,
    /// Renamed to the final name: nothing left to clean up.
    renamed: bool,
}

/// Full blocks handed to the writer's thread that it has not taken yet; a
/// caller ahead of the thread by more waits.
pub const BLOCKS_AHEAD: usize = 2;

/// The file's end of a snapshot: compresses, checksums and writes blocks.
#[derive(Debug)]
struct Sink {
    file: File,
    compressor: Compressor,
    /// The compressed block.
    zbuf: Vec<u8>,
    /// Bytes written to the file so far.
    offset: u64,
    blocks: u64,
    /// `offset`, told to the file's followers.
    written: Arc<Written>,
}

impl Sink {
    fn write_block(&mut self, block: &[u8]) -> io::Result<()> {
        self.zbuf.clear();
        self.zbuf
            .reserve(zstd::zstd_safe::compress_bound(block.len()));
        self.compressor
            .0
            .compress_to_buffer(block, &mut self.zbuf)?;
        // Both lengths are bounded by MAX_BLOCK_LEN (items by MAX_ITEM_LEN).
        let (clen, ulen) = (self.zbuf.len() as u32, block.len() as u32);
        let head = encode_block_header(clen, ulen, block_crc(clen, ulen, &self.zbuf));
        self.file.write_all(&head)?;
        self.file.write_all(&self.zbuf)?;
        self.offset += (head.len() + self.zbuf.len()) as u64;
        self.blocks += 1;
        self.written.grew(self.offset);
        Ok(())
    }
}

/// How much of a snapshot's file is written, for the readers that follow
/// it ([`SnapshotWriter::follow`]): only whole blocks are counted, once
/// written, and the count ends when the writer's thread does (all blocks
/// written, or an error, or the writer dropped).
#[derive(Debug)]
pub(crate) struct Written {
    /// Bytes written, and whether that is all.
    at: Mutex<(u64, bool)>,
    grown: Condvar,
}

impl Written {
    fn new(offset: u64) -> Written {
        Written {
            at: Mutex::new((offset, false)),
            grown: Condvar::new(),
        }
    }

    fn grew(&self, offset: u64) {
        self.at.lock().unwrap_or_else(PoisonError::into_inner).0 = offset;
        self.grown.notify_all();
    }

    fn ended(&self) {
        self.at.lock().unwrap_or_else(PoisonError::into_inner).1 = true;
        self.grown.notify_all();
    }

    /// The bytes written once there are more than `offset` or no more
    /// will come (`all`: wait for the end in any case).
    pub(crate) fn wait_beyond(&self, offset: u64, all: bool) -> u64 {
        let at = self.at.lock().unwrap_or_else(PoisonError::into_inner);
        let at = self
            .grown
            .wait_while(at, |&mut (written, ended)| {
                !ended && (all || written <= offset)
            })
            .unwrap_or_else(PoisonError::into_inner);
        at.0
    }
}

/// Ends a [`Written`] count however the writer's thread ends.
struct EndsWritten(Arc<Written>);

impl Drop for EndsWritten {
    fn drop(&mut self) {
        self.0.ended();
    }
}

/// The thread that owns the [`Sink`] while blocks come in, and fsyncs the
/// file after the last one once sealed. It stops at the first error, which
/// [`Worker::join`] returns; blocks it is done with come back empty through
/// `spare`, for the next ones.
#[derive(Debug)]
struct Worker {
    /// `None` once sealed.
    blocks: Option<SyncSender<Vec<u8>>>,
    /// How much of the file the thread has written.
    written: Arc<Written>,
    spare: Receiver<Vec<u8>>,
    /// Whether to fsync the file after the last block.
    sync: Arc<AtomicBool>,
    thread: JoinHandle<io::Result<Sink>>,
}

impl Worker {
    fn start(mut sink: Sink) -> io::Result<Worker> {
        let written = sink.written.clone();
        let (blocks, todo) = sync_channel::<Vec<u8>>(BLOCKS_AHEAD);
        let (done, spare) = channel::<Vec<u8>>();
        let sync = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("distkv-snapshot".into())
            .spawn({
                let sync = sync.clone();
                move || {
                    let ends = EndsWritten(sink.written.clone());
                    for mut block in todo {
                        sink.write_block(&block)?;
                        block.clear();
                        let _ = done.send(block);
                    }
                    // Followers need not wait for the fsync.
                    drop(ends);
                    if sync.load(Ordering::Acquire) {
                        sink.file.sync_all()?;
                    }
                    Ok(sink)
                }
            })?;
        Ok(Worker {
            blocks: Some(blocks),
            written,
            spare,
            sync,
            thread,
        })
    }

    /// No more blocks: the thread fsyncs the file after the last one.
    fn seal(&mut self) {
        self.sync.store(true, Ordering::Release);
        self.blocks = None;
    }

    /// Waits for every block handed over to be written (and, once sealed,
    /// fsynced), or for the error that stopped the thread, and takes the
    /// sink back.
    fn join(mut self) -> io::Result<Sink> {
        self.blocks = None;
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the snapshot writer's thread panicked")))
    }
}

/// zstd's compressor lacks `Debug`.
struct Compressor(zstd::bulk::Compressor<'static>);

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Compressor")
    }
}

/// The temporary name of a snapshot being written to `final_path`.
pub fn temp_path(final_path: &FsPath) -> PathBuf {
    let mut s = final_path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

impl SnapshotWriter {
    /// Starts a snapshot that will be named `final_path`, with default
    /// [`WriteOptions`]. Creates (or truncates) `<final_path>.tmp` and
    /// writes the header to it.
    pub fn create(final_path: impl AsRef<FsPath>, header: &SnapshotHeader) -> Result<Self> {
        Self::create_with(final_path, header, WriteOptions::default())
    }

    /// Like [`create`](Self::create), with explicit options.
    pub fn create_with(
        final_path: impl AsRef<FsPath>,
        header: &SnapshotHeader,
        options: WriteOptions,
    ) -> Result<Self> {
        if options.block_size == 0 || options.block_size > MAX_BLOCK_LEN {
            return Err(SnapshotError::InvalidInput(format!(
                "block size {} is not within 1..={MAX_BLOCK_LEN}",
                options.block_size
            )));
        }
        let levels = zstd::compression_level_range();
        if !levels.contains(&options.level) {
            return Err(SnapshotError::InvalidInput(format!(
                "zstd level {} is not within {levels:?}",
                options.level
            )));
        }
        let head = header.encode().map_err(SnapshotError::InvalidInput)?;
        let final_path = final_path.as_ref().to_path_buf();
        let tmp_path = temp_path(&final_path);
        let io = |source| SnapshotError::Io {
            file: tmp_path.clone(),
            source,
        };
        let compressor = zstd::bulk::Compressor::new(options.level).map_err(io)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp_path)
            .map_err(io)?;
        // From here on the temporary file exists: build the writer first so
        // that its `Drop` removes the file if writing the header fails.
        let mut w = SnapshotWriter {
            final_path,
            tmp_path: tmp_path.clone(),
            worker: None,
            enc: Encoder::default(),
            block_size: options.block_size,
            block: Vec::with_capacity(options.block_size.min(DEFAULT_BLOCK_SIZE) + 1024),
            item: Vec::new(),
            poisoned: false,
            sealed: false,
            renamed: false,
        };
        file.write_all(&head).map_err(io)?;
        let sink = Sink {
            file,
            compressor: Compressor(compressor),
            zbuf: Vec::new(),
            offset: head.len() as u64,
            blocks: 0,
            written: Arc::new(Written::new(head.len() as u64)),
        };
        w.worker = Some(Worker::start(sink).map_err(io)?);
        Ok(w)
    }

    /// The name the snapshot gets when finished.
    pub fn final_path(&self) -> &FsPath {
        &self.final_path
    }

    /// The temporary file being written.
    pub fn temp_path(&self) -> &FsPath {
        &self.tmp_path
    }

    /// A reader of the file as it is being written, for checking it on
    /// another thread meanwhile: it reads each block once this writer's
    /// thread has written it, waits for the next, and ends as a reader of
    /// the finished file does — after the `End` item, once the last block
    /// is written (not fsynced), or with an error: a writer dropped or
    /// failed before `End` leaves it a truncated file. It keeps the file
    /// open, so it reads on past the rename of
    /// [`finish`](Self::finish).
    pub fn follow(&self) -> Result<SnapshotReader> {
        match &self.worker {
            Some(w) if !self.poisoned => SnapshotReader::follow(&self.tmp_path, w.written.clone()),
            _ => Err(failed_earlier()),
        }
    }

    /// Adds a node. All nodes must be written before the first entry, each
    /// name once.
    pub fn write_node(
        &mut self,
        name: &str,
        tick: Option<u64>,
        known: &RangeSet,
        deleted: &RangeSet,
    ) -> Result<()> {
        self.usable()?;
        self.enc
            .node(&mut self.item, name, tick, known, deleted)
            .map_err(SnapshotError::InvalidInput)?;
        self.push_item()
    }

    /// Adds an entry: its full path, its value (`None` for a tombstone or a
    /// data-less node with a chain), its full chain and its tock. Entries
    /// should come depth first, parents before children, so paths share
    /// prefixes; any order is stored faithfully.
    pub fn write_entry(
        &mut self,
        path: &[Value],
        value: Option<&Value>,
        chain: Option<&Chain>,
        tock: u64,
    ) -> Result<()> {
        self.usable()?;
        self.enc
            .entry(&mut self.item, path, value, chain, tock)
            .map_err(SnapshotError::InvalidInput)?;
        self.push_item()
    }

    /// Adds an item read from another snapshot (copying, re-compressing).
    pub fn write_item(&mut self, item: &Item) -> Result<()> {
        match item {
            Item::Node(n) => self.write_node(&n.name, n.tick, &n.known, &n.deleted),
            Item::Entry(e) => self.write_entry(&e.path, e.value.as_ref(), e.chain.as_ref(), e.tock),
        }
    }

    /// Number of nodes written so far.
    pub fn nodes(&self) -> u64 {
        self.enc.nodes()
    }

    /// Number of entries written so far.
    pub fn entries(&self) -> u64 {
        self.enc.entries()
    }

    /// Writes the `End` item and the last block; the writer's thread fsyncs
    /// the file once it has written them, while the caller goes on.
    /// Nothing can be added after; [`finish`](Self::finish) completes the
    /// snapshot.
    pub fn seal(&mut self) -> Result<()> {
        self.usable()?;
        self.enc.end(&mut self.item);
        self.push_item()?;
        self.flush_block()?;
        if let Some(w) = self.worker.as_mut() {
            w.seal();
        }
        self.sealed = true;
        Ok(())
    }

    /// [Seals](Self::seal) the snapshot if it is not yet, waits until the
    /// file is written and fsynced, renames it to the final name and
    /// fsyncs the directory.
    pub fn finish(mut self) -> Result<SnapshotInfo> {
        if !self.sealed {
            self.seal()?;
        }
        let Some(worker) = self.worker.take() else {
            return Err(failed_earlier());
        };
        let sink = worker.join().map_err(|e| self.fail(e))?;
        drop(sink.file);
        fs::rename(&self.tmp_path, &self.final_path).map_err(|e| self.fail(e))?;
        self.renamed = true;
        sync_parent(&self.final_path)?;
        Ok(SnapshotInfo {
            bytes: sink.offset,
            nodes: self.enc.nodes(),
            entries: self.enc.entries(),
            blocks: sink.blocks,
        })
    }

    fn usable(&self) -> Result<()> {
        if self.poisoned || self.worker.is_none() {
            return Err(failed_earlier());
        }
        if self.sealed {
            return Err(SnapshotError::InvalidInput(
                "snapshot sealed: nothing can be added".into(),
            ));
        }
        Ok(())
    }

    fn fail(&mut self, source: std::io::Error) -> SnapshotError {
        self.poisoned = true;
        SnapshotError::Io {
            file: self.tmp_path.clone(),
            source,
        }
    }

    /// Appends the encoded item, closing the current block first if the
    /// item would take it past the target size.
    fn push_item(&mut self) -> Result<()> {
        let need = 4 + self.item.len();
        if !self.block.is_empty() && self.block.len() + need > self.block_size {
            self.flush_block()?;
        }
        // `Encoder` bounds items to MAX_ITEM_LEN, so this fits a u32.
        self.block
            .extend_from_slice(&(self.item.len() as u32).to_le_bytes());
        self.block.extend_from_slice(&self.item);
        Ok(())
    }

    /// Hands the block to the writer's thread (waiting while it is
    /// [`BLOCKS_AHEAD`] blocks behind) and starts the next in a buffer it
    /// is done with.
    fn flush_block(&mut self) -> Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let Some(worker) = self.worker.as_mut() else {
            return self.usable();
        };
        let next = worker
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(self.block.capacity()));
        let full = std::mem::replace(&mut self.block, next);
        let sent = worker.blocks.as_ref().is_some_and(|b| b.send(full).is_ok());
        if !sent {
            // The thread stopped at an error: that is the one to report.
            let e = match self.worker.take().map(Worker::join) {
                Some(Err(e)) => e,
                _ => io::Error::other("the snapshot writer's thread stopped"),
            };
            return Err(self.fail(e));
        }
        Ok(())
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if !self.renamed {
            // Closes the file once the thread is through the blocks it has
            // (no fsync: the file goes).
            if let Some(w) = self.worker.take() {
                w.sync.store(false, Ordering::Release);
                let _ = w.join();
            }
            // Best effort: the file may never have been created.
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

fn failed_earlier() -> SnapshotError {
    SnapshotError::InvalidInput("snapshot writer failed earlier; drop it and start again".into())
}

/// fsyncs the directory holding `path`, so a rename into it is durable.
fn sync_parent(path: &FsPath) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => FsPath::new("."),
    };
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| SnapshotError::Io {
                file: dir.to_path_buf(),
                source,
            })?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
