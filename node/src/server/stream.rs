//! Multi-reply (stream) requests: `get_tree`, `get_tree_internal`, `watch`.
//!
//! A stream runs in its own task: `{seq, state:"start"}`, data messages,
//! optionally `{seq, state:"uptodate"}`, and always `{seq, state:"end"}` —
//! also after an error or a `stop` (the end is given two seconds, like
//! DistKV's shielded send). With flow control (`qlen > 0`) every message
//! carries `wseq` and the task waits while `wseq − acked ≥ qlen`; the
//! connection's reader feeds acknowledgements into the stream's [`Window`].
//!
//! Walks and log reads hold the state lock for one bounded chunk at a time
//! and never across a send. Watchers read the node's event log with their own
//! cursor; one that falls so far behind that the log dropped records it has
//! not sent ends with the error `Aborted. Queue filled?` — never a silent
//! gap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distkv_model::{codec, Chain, Value};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::handlers::{bool_field, int_field, req_path, View};
use super::reply::{put, CmdError, CmdResult, Fields, Shortener};
use super::{encode_msg, Server};
use crate::state::acl::{Mode, Want};
use crate::state::{Entry, WalkCursor, WalkOpts};

/// Entries collected per lock acquisition.
const CHUNK: usize = 256;

/// A stream's flow-control window: how far the client has acknowledged.
#[derive(Debug)]
pub struct Window {
    qlen: u64,
    acked: AtomicU64,
    notify: Notify,
}

impl Window {
    /// A window of `qlen` unacknowledged messages.
    pub fn new(qlen: u64) -> Window {
        Window {
            qlen,
            acked: AtomicU64::new(0),
            notify: Notify::new(),
        }
    }

    /// The client has read everything up to `wseq`.
    pub fn ack(&self, wseq: u64) {
        self.acked.fetch_max(wseq, Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    /// Whether message `wseq` may be sent now.
    fn has_room(&self, wseq: u64) -> bool {
        wseq.saturating_sub(self.acked.load(Ordering::Acquire)) < self.qlen
    }

    /// Waits until message `wseq` may be sent.
    async fn admit(&self, wseq: u64) {
        loop {
            let woken = self.notify.notified();
            if self.has_room(wseq) {
                return;
            }
            woken.await;
        }
    }
}

/// The connection went away.
#[derive(Debug)]
pub struct Gone;

/// What a stream body ends with: the connection is gone, or an error to report.
pub type Body = Result<CmdResult<()>, Gone>;

/// The sending side of one stream.
pub struct StreamOut {
    server: Arc<Server>,
    seq: u64,
    tx: mpsc::Sender<Vec<u8>>,
    window: Option<Arc<Window>>,
    wseq: u64,
}

impl StreamOut {
    /// A stream answering request `seq`.
    pub fn new(
        server: Arc<Server>,
        seq: u64,
        tx: mpsc::Sender<Vec<u8>>,
        window: Option<Arc<Window>>,
    ) -> StreamOut {
        StreamOut {
            server,
            seq,
            tx,
            window,
            wseq: 0,
        }
    }

    /// Sends one message of the stream, waiting for the window.
    pub async fn send(&mut self, mut m: Fields) -> Result<(), Gone> {
        put(&mut m, "seq", Value::uint(self.seq));
        if let Some(w) = &self.window {
            // Numbered only once admitted: a send cancelled while waiting
            // must not use up a number.
            let wseq = self.wseq + 1;
            w.admit(wseq).await;
            self.wseq = wseq;
            put(&mut m, "wseq", Value::uint(wseq));
        }
        let mut buf = Vec::new();
        encode_msg(&self.server, m, &mut buf);
        self.tx.send(buf).await.map_err(|_| Gone)
    }

    /// Sends messages encoded ahead ([`Encoded`]), as few writes as the
    /// window allows: in one buffer, cut only where the window is full (the
    /// part before is handed to the writer before waiting for room).
    async fn send_encoded(&mut self, batch: Encoded) -> Result<(), Gone> {
        let Encoded { buf, ends } = batch;
        let mut sent = 0;
        if let Some(w) = self.window.clone() {
            for (i, &end) in ends.iter().enumerate() {
                let wseq = self.wseq + 1;
                if !w.has_room(wseq) {
                    let start = i.checked_sub(1).map_or(0, |j| ends[j]);
                    if start > sent {
                        let part = buf[sent..start].to_vec();
                        self.tx.send(part).await.map_err(|_| Gone)?;
                        sent = start;
                    }
                    w.admit(wseq).await;
                }
                self.wseq = wseq;
                debug_assert!(end > sent);
            }
        }
        match sent {
            0 if buf.is_empty() => Ok(()),
            0 => self.tx.send(buf).await.map_err(|_| Gone),
            _ if sent == buf.len() => Ok(()),
            _ => self.tx.send(buf[sent..].to_vec()).await.map_err(|_| Gone),
        }
    }

    async fn state(&mut self, state: &str) -> Result<(), Gone> {
        self.send(vec![("state", Value::str(state))]).await
    }
}

/// Entry messages of a stream, encoded straight from the tree (or the
/// event log) while the state is locked: no reply maps, no cloned values.
/// Each carries the window number it will be sent with
/// ([`StreamOut::send_encoded`] sends them in order, each only once the
/// window has room for it).
#[derive(Default)]
struct Encoded {
    buf: Vec<u8>,
    /// Where each message ends in `buf`.
    ends: Vec<usize>,
}

impl Encoded {
    /// Appends `{value?, chain?, tock, path, depth, seq, wseq?}` — the
    /// fields, in the order, of DistKV's entry messages — for the entry at
    /// `rel` below the shortener's prefix.
    #[allow(clippy::too_many_arguments)]
    fn entry(
        &mut self,
        out: &StreamOut,
        value: Option<&Value>,
        chain: Option<&Chain>,
        nchain: i64,
        tock: u64,
        rel: &[Value],
        shortener: &mut Shortener,
    ) {
        let chain = chain.filter(|_| nchain != 0);
        let wseq = out
            .window
            .as_ref()
            .map(|_| out.wseq + 1 + self.ends.len() as u64);
        let fields = 4 + [value.is_some(), chain.is_some(), wseq.is_some()]
            .iter()
            .filter(|&&x| x)
            .count();
        let buf = &mut self.buf;
        codec::write_map_len(buf, fields);
        if let Some(v) = value {
            codec::write_str(buf, "value");
            codec::encode(v, buf);
        }
        if let Some(c) = chain {
            codec::write_str(buf, "chain");
            codec::encode(&c.to_value(nchain), buf);
        }
        codec::write_str(buf, "tock");
        codec::write_uint(buf, tock);
        shortener.write(rel, buf);
        codec::write_str(buf, "seq");
        codec::write_uint(buf, out.seq);
        if let Some(w) = wseq {
            codec::write_str(buf, "wseq");
            codec::write_uint(buf, w);
        }
        self.ends.push(buf.len());
    }
}

/// Which stream command to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `get_tree`.
    GetTree,
    /// `get_tree_internal`.
    GetTreeInternal,
    /// `watch`.
    Watch,
    /// `msg_monitor`.
    MsgMonitor,
}

/// Runs a stream command to its end: start, body, (error), end.
pub async fn run(
    kind: Kind,
    server: Arc<Server>,
    view: View,
    msg: Value,
    mut out: StreamOut,
    cancel: CancellationToken,
) {
    if out.state("start").await.is_err() {
        return;
    }
    let body = async {
        match kind {
            Kind::GetTree => get_tree(&server, &view, &msg, false, &mut out).await,
            Kind::GetTreeInternal => get_tree(&server, &view, &msg, true, &mut out).await,
            Kind::Watch => watch(&server, &view, &msg, &mut out).await,
            Kind::MsgMonitor => super::bus_msgs::monitor(&server, &view, &msg, &mut out).await,
        }
    };
    let res = tokio::select! {
        r = body => r,
        _ = cancel.cancelled() => Ok(Ok(())),
    };
    match res {
        Err(Gone) => return,
        Ok(Err(e)) => {
            let m = vec![("error", Value::str(&e.to_string()))];
            if out.send(m).await.is_err() {
                return;
            }
        }
        Ok(Ok(())) => {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), out.state("end")).await;
}

fn walk_opts(msg: &Value) -> CmdResult<WalkOpts> {
    let min = int_field(msg, "min_depth", 0)?.max(0) as usize;
    let max = int_field(msg, "max_depth", -1)?;
    Ok(WalkOpts {
        min_depth: min,
        max_depth: (max >= 0).then_some(max as usize),
        empty: bool_field(msg, "empty", false),
        meta: bool_field(msg, "empty", false),
    })
}

/// Sends entries of the subtree at `path`, in chunks, optionally only those
/// older than `before` (a tock), values encoded for the view's converter
/// group. With an ACL ([`crate::state::acl::Access`]), as DistKV walks:
/// an entry's value is left out where the ACL denies `r`, nothing below a
/// level it may not enumerate (`e`) is sent, and below a level it may not
/// traverse (`x`) no value is.
#[allow(clippy::too_many_arguments)]
async fn send_walk(
    server: &Server,
    path: &distkv_model::Path,
    view: &View,
    opts: &WalkOpts,
    nchain: i64,
    shortener: &mut Shortener,
    before: Option<u64>,
    out: &mut StreamOut,
) -> Result<CmdResult<()>, Gone> {
    let access = &view.access;
    let rules = server.store().rules();
    let mut cursor = WalkCursor::default();
    let mut first = true;
    while !cursor.is_done() {
        let mut batch = Encoded::default();
        let mut failed = None;
        {
            let st = server.state();
            let Some(start) = st.entry(path) else {
                if first {
                    return Ok(Err(CmdError::NotFound(path.to_string())));
                }
                // The subtree vanished during the walk: nothing more to send.
                break;
            };
            first = false;
            let mut emit = |e: Entry<'_>, rel: &[Value], readable: bool| {
                if before.is_some_and(|t| e.tock() >= t) {
                    return;
                }
                let full = || path.iter().chain(rel).cloned().collect();
                let value = match readable.then(|| view.entry_value(rules, &st, e, full)) {
                    None => None,
                    Some(Ok(v)) => v,
                    Some(Err(err)) => {
                        failed.get_or_insert(err);
                        return;
                    }
                };
                let (chain, tock) = (e.chain(), e.tock());
                batch.entry(
                    out,
                    value.as_deref(),
                    chain.as_deref(),
                    nchain,
                    tock,
                    rel,
                    shortener,
                );
            };
            if access.is_restricted() {
                // Read afresh per chunk: a changed ACL counts at once.
                let base = access.cursor(&st).follow_to(path);
                cursor.step_pruned(start, opts, CHUNK, |e, rel, report| {
                    let Some(at) = base.below(rel) else {
                        return false;
                    };
                    if report {
                        emit(e, rel, at.allows(Mode::Read));
                    }
                    at.allows(Mode::Enumerate)
                });
            } else {
                cursor.step(start, opts, CHUNK, |e, rel| emit(e, rel, true));
            }
        }
        out.send_encoded(batch).await?;
        if let Some(err) = failed {
            return Ok(Err(err));
        }
    }
    Ok(Ok(()))
}

async fn get_tree(
    server: &Server,
    view: &View,
    msg: &Value,
    meta: bool,
    out: &mut StreamOut,
) -> Result<CmdResult<()>, Gone> {
    let (path, rel_empty, nchain, opts) = match (|| {
        let rel = req_path(msg)?;
        let mut opts = walk_opts(msg)?;
        // A walk from the root with `empty` shows the meta tree, as in
        // DistKV; never to a user bound to an ACL.
        opts.meta &= !view.access.is_restricted();
        Ok::<_, CmdError>((
            view.resolve(&rel, meta)?,
            rel.is_empty() && !meta,
            int_field(msg, "nchain", 0)?,
            opts,
        ))
    })() {
        Ok(x) => x,
        Err(e) => return Ok(Err(e)),
    };
    if let Err(e) = view.follow(&server.state(), &path, Want::Mode(Mode::Enumerate)) {
        return Ok(Err(e));
    }
    let mut shortener = Shortener::new(path.len(), rel_empty);
    send_walk(
        server,
        &path,
        view,
        &opts,
        nchain,
        &mut shortener,
        None,
        out,
    )
    .await
}

async fn watch(
    server: &Server,
    view: &View,
    msg: &Value,
    out: &mut StreamOut,
) -> Result<CmdResult<()>, Gone> {
    let (path, rel_empty, nchain, opts, fetch) = match (|| {
        let rel = req_path(msg)?;
        let mut opts = walk_opts(msg)?;
        opts.meta = false;
        Ok::<_, CmdError>((
            view.resolve(&rel, false)?,
            rel.is_empty(),
            int_field(msg, "nchain", 0)?,
            opts,
            bool_field(msg, "fetch", false),
        ))
    })() {
        Ok(x) => x,
        Err(e) => return Ok(Err(e)),
    };
    let mut changes = server.subscribe();
    let (mut next, tock) = {
        let mut st = server.state_mut();
        let allowed = view
            .acl(&st)
            .follow(st.root(), &path, Want::Mode(Mode::Traverse));
        if let Err(e) = allowed {
            return Ok(Err(super::handlers::acl_err(e)));
        }
        st.ensure_entry(&path);
        (st.log().next_seq(), server.next_tock())
    };
    let mut shortener = Shortener::new(path.len(), rel_empty);
    if fetch {
        match send_walk(
            server,
            &path,
            view,
            &opts,
            nchain,
            &mut shortener,
            Some(tock),
            out,
        )
        .await?
        {
            Ok(()) => out.state("uptodate").await?,
            Err(e) => return Ok(Err(e)),
        }
    }
    let meta_ok = path.first().is_some_and(Value::is_nil);
    loop {
        let latest = *changes.borrow_and_update();
        let mut batch = Encoded::default();
        {
            let st = server.state();
            let rules = server.store().rules();
            let base = view.access.cursor(&st).follow_to(&path);
            let records = match st.log().read(next, CHUNK) {
                Ok(r) => r,
                Err(lag) => {
                    tracing::info!(%lag, "watcher fell behind");
                    return Ok(Err(CmdError::Server("Aborted. Queue filled?".into())));
                }
            };
            for (seq, record) in records {
                next = seq + 1;
                if !record.path_starts_with(&path) {
                    continue;
                }
                let ev = record.event();
                if !meta_ok && ev.path.first().is_some_and(Value::is_nil) {
                    continue;
                }
                let depth = ev.path.len() - path.len();
                if depth < opts.min_depth || opts.max_depth.is_some_and(|m| depth > m) {
                    continue;
                }
                let Some(at) = base.below(&ev.path[path.len()..]) else {
                    continue;
                };
                let value = match (&ev.value, at.allows(Mode::Read)) {
                    (Some(v), true) => match view.encode(rules, &st, &ev.path, v.clone()) {
                        Ok(v) => Some(v),
                        Err(e) => return Ok(Err(e)),
                    },
                    _ => None,
                };
                let chain = Some(&ev.chain);
                batch.entry(
                    out,
                    value.as_ref(),
                    chain,
                    nchain,
                    ev.tock,
                    &ev.path[path.len()..],
                    &mut shortener,
                );
            }
        }
        out.send_encoded(batch).await?;
        if next >= latest && changes.changed().await.is_err() {
            return Ok(Ok(()));
        }
    }
}
