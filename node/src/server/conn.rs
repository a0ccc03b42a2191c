//! One client connection.
//!
//! The reader loop owns the socket's read half. It decodes every complete
//! message already received, answers single-reply requests inline into one
//! output buffer and writes that buffer itself (one write per batch, no task
//! hop), spawns a task per stream request, and routes `ack`s to running
//! streams. Streams send through a bounded channel to a writer task that
//! coalesces their messages. Both writers share the write half behind an
//! async mutex, so messages are never interleaved. A client that stops
//! reading stalls the writes, then the reader (back-pressure); memory stays
//! bounded.
//!
//! Bad input never takes more than this connection down: a message that is
//! not a map or lacks `seq` gets an error without `seq` and the connection
//! stays open; an unknown action gets an error **with** its `seq` (DistKV
//! closed the connection), and so does a message holding a msgpack
//! extension type DistKV's clients cannot read; bytes that are not msgpack,
//! or a message over the size or nesting limit, get an error and the
//! connection is closed,
//! since an unframed stream cannot be resynchronised.
//!
//! Silence is bounded too (`server.limits`): a connection whose first
//! message has not fully arrived `handshake_timeout` after connecting is
//! closed with an error (every DistKV client sends its hello at once). With
//! an `idle_timeout`, so is a connection that sent no complete message for
//! that long while running no stream or file task: a watch or monitor, how
//! long it may wait for its next change, keeps its connection open. A
//! message trickling in byte by byte is not activity; only complete ones
//! are.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distkv_client::tls::{ReadHalf, Socket, WriteHalf};
use distkv_model::event::path_from_value;
use distkv_model::{Path, PathStrings, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::auth::{self, Login};
use super::handlers::{self, int_field, req_path, View};
use super::reply::{chain_fields, put, CmdError, CmdResult, Fields, Shortener};
use super::request::{path_strings, Action, Request, ValueArgs};
use super::stream::{self, Kind, StreamOut, Window};
use super::{encode_msg, export, Server, VERSION};
use crate::commit::{Change, Road, StateRef, Store, Tx};
use crate::state::{Lookahead, State};
use crate::wire::{decode_frame, MsgReader, Next, WireError};

/// Encoded reply batches queued for the writer.
const WRITE_QUEUE: usize = 64;
/// How long a closing connection waits for its streams and writes.
const CLOSE_GRACE: Duration = Duration::from_secs(3);
/// Most streams one connection may run at once.
const MAX_STREAMS: usize = 1024;

struct StreamCtl {
    cancel: CancellationToken,
    window: Option<Arc<Window>>,
}

type Streams = Arc<Mutex<HashMap<u64, StreamCtl>>>;
type SharedWriter = Arc<tokio::sync::Mutex<WriteHalf>>;

struct Conn {
    server: Arc<Server>,
    view: View,
    qlen: u64,
    tx: mpsc::Sender<Vec<u8>>,
    wr: SharedWriter,
    streams: Streams,
    tasks: TaskTracker,
    /// When the last of `tasks` ended.
    tasks_ended: Arc<Mutex<Instant>>,
    cancel: CancellationToken,
    /// The current batch changed the state: under `fsync = always` its
    /// replies wait until the change is on disk.
    changed: bool,
    /// The replies to the batch's change requests: their seq and where
    /// they are in the batch's output (replaced by an error if the change
    /// cannot be written).
    change_replies: Vec<(u64, std::ops::Range<usize>)>,
    /// When the connection was accepted.
    connected: Instant,
    /// When the last complete message arrived (`None`: none yet).
    last_message: Option<Instant>,
    /// Whether it has logged in, and its Diffie-Hellman key.
    login: Login,
    /// `auth_set` streams of `_test` users waiting for the client's name.
    test_users: HashSet<u64>,
    /// The strings of the last value request's path.
    names: PathStrings,
    /// Value requests read and not yet run: a run of them takes the state
    /// once ([`Conn::run_values`]).
    run: Vec<Pending>,
    /// Their results, kept for the next run.
    results: Vec<CmdResult<Fields>>,
    /// The entries they name ([`Batch`]'s look-ahead), kept for the next run.
    hints: Vec<Path>,
}

/// A value request read, its arguments decoded, waiting in a run.
struct Pending {
    action: Action,
    seq: u64,
    args: ValueArgs,
}

/// Most requests one connection runs under one lock of the state: the
/// other connections wait no longer than that.
const MAX_BATCH: usize = 64;

/// How a run of pipelined `get_value`, `set_value` and `delete_value`
/// requests ([`Conn::run_values`]) holds the state: once for up to
/// [`MAX_BATCH`] of them, so the state is locked, and the log writer woken,
/// once per run instead of once per request. A run of reads holds the
/// state shared, beside other connections' reads; the first change takes
/// it for changes ([`Tx`]) for the rest of the run.
///
/// The run's entries are asked for together as soon as the state is
/// held ([`Lookahead::group`]): their look-ups then miss the caches side by
/// side instead of one after the other, while the other connections wait.
struct Batch<'a> {
    store: &'a Store,
    held: Held<'a>,
    /// The entries the run's requests name, to ask for once held.
    hints: &'a [Path],
}

/// How a [`Batch`] holds the state.
enum Held<'a> {
    None,
    Read(StateRef<'a>),
    Write(Tx<'a>),
}

impl<'a> Batch<'a> {
    fn new(store: &'a Store, hints: &'a [Path]) -> Batch<'a> {
        Batch {
            store,
            held: Held::None,
            hints,
        }
    }

    /// Asks for the run's entries (the first time the state is held).
    fn look_ahead(&mut self, st: &State) {
        Lookahead::default().group(st, std::mem::take(&mut self.hints));
    }

    /// The state for a read, locked shared if the run holds nothing yet.
    fn read(&mut self) -> &State {
        if matches!(self.held, Held::None) {
            let st = self.store.state();
            self.look_ahead(&st);
            self.held = Held::Read(st);
        }
        match &self.held {
            Held::Read(st) => st,
            Held::Write(tx) => tx.state(),
            Held::None => unreachable!("locked above"),
        }
    }

    /// The open transaction, begun if need be (a shared hold is let go
    /// first: each request stands alone).
    fn tx(&mut self) -> &mut Tx<'a> {
        if !matches!(self.held, Held::Write(_)) {
            self.held = Held::None;
            let tx = self.store.begin();
            self.look_ahead(tx.state());
            self.held = Held::Write(tx);
        }
        match &mut self.held {
            Held::Write(tx) => tx,
            _ => unreachable!("begun above"),
        }
    }
}

/// Tells a client why it is closed at once.
pub(super) async fn refuse(server: &Server, sock: Socket, why: &str) {
    let mut out = Vec::new();
    encode_msg(server, vec![("error", Value::str(why))], &mut out);
    let (_rd, mut wr) = sock.into_split();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        wr.write_all(&out).await?;
        // TLS: the record goes out, then close_notify.
        wr.shutdown().await
    })
    .await;
}

/// Serves one connection until the client leaves, it misbehaves beyond
/// repair, or `shutdown` fires.
pub(super) async fn run(
    server: Arc<Server>,
    sock: Socket,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    tracing::debug!(%peer, "client connected");
    let (rd, wr) = sock.into_split();
    let (tx, rx) = mpsc::channel(WRITE_QUEUE);
    let wr: SharedWriter = Arc::new(tokio::sync::Mutex::new(wr));
    let writer = tokio::spawn(write_loop(wr.clone(), rx));
    let mut reader = MsgReader::with_limits(rd, server.opts.limits);
    let server2 = server.clone();
    let mut conn = Conn {
        server,
        view: View::default(),
        qlen: 0,
        tx,
        wr: wr.clone(),
        streams: Arc::default(),
        tasks: TaskTracker::new(),
        tasks_ended: Arc::new(Mutex::new(Instant::now())),
        cancel: shutdown.child_token(),
        changed: false,
        change_replies: Vec::new(),
        connected: Instant::now(),
        last_message: None,
        login: Login::new(&server2),
        test_users: HashSet::new(),
        names: path_strings(),
        run: Vec::with_capacity(MAX_BATCH),
        results: Vec::with_capacity(MAX_BATCH),
        hints: Vec::with_capacity(MAX_BATCH),
    };
    let reason = conn.serve(&mut reader).await;
    tracing::debug!(%peer, %reason, "client disconnected");
    conn.cancel.cancel();
    conn.tasks.close();
    // Streams end within their two-second grace for `end`; a client that
    // does not read gets no more than that.
    let _ = tokio::time::timeout(CLOSE_GRACE, conn.tasks.wait()).await;
    drop(conn);
    let abort = writer.abort_handle();
    if tokio::time::timeout(CLOSE_GRACE, writer).await.is_err() {
        abort.abort();
    }
    let closing = wr.try_lock().ok();
    if let Some(mut w) = closing {
        let _ = tokio::time::timeout(CLOSE_GRACE, w.shutdown()).await;
    }
}

/// Writes the streams' messages, coalescing whatever is queued.
async fn write_loop(wr: SharedWriter, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut buf = Vec::new();
    while let Some(first) = rx.recv().await {
        buf.clear();
        buf.extend_from_slice(&first);
        while buf.len() < (1 << 20) {
            match rx.try_recv() {
                Ok(more) => buf.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if wr.lock().await.write_all(&buf).await.is_err() {
            return;
        }
        if buf.capacity() > (4 << 20) {
            buf = Vec::new();
        }
    }
}

impl Conn {
    async fn serve(&mut self, reader: &mut MsgReader<ReadHalf>) -> String {
        let mut out = Vec::new();
        self.greeting(&mut out);
        let mut eof = false;
        loop {
            // Answer everything already received, then send the batch.
            let drained = self.drain(reader, &mut out);
            if let Err(why) = self.flush(&mut out).await {
                return why;
            }
            if let Err(e) = drained {
                return self.fatal(e).await;
            }
            if eof {
                return "closed by client".into();
            }
            // No timer (nor clock reading) per request where nothing times
            // out: without an idle timeout, once the first message is in.
            let silence = self.silence_deadline();
            let silent = async {
                match silence {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let more = tokio::select! {
                r = reader.fill() => r,
                _ = self.cancel.cancelled() => return "server shutting down".into(),
                _ = silent => {
                    match self.too_silent() {
                        Some(why) => return self.close_with(why).await,
                        None => continue,
                    }
                }
            };
            match more {
                Ok(true) => {}
                // Answer what is left; a partial message is an error.
                Ok(false) => eof = true,
                Err(e) => return self.fatal(e).await,
            }
        }
    }

    /// Dispatches every complete message already received. A run of
    /// pipelined `get_value`/`set_value`/`delete_value` requests runs under
    /// one lock of the state ([`Conn::run_values`]); the log writer and
    /// watchers hear of its changes once, when it ends.
    fn drain(
        &mut self,
        reader: &mut MsgReader<ReadHalf>,
        out: &mut Vec<u8>,
    ) -> Result<(), WireError> {
        let limits = reader.limits();
        let mut got = false;
        let res = loop {
            let msg = match reader.try_next_read(|b| Request::parse(b, limits)) {
                Ok(Some(Next::Read(frame, spans))) => {
                    got = true;
                    let req = Request::new(frame, spans);
                    if self.queue_value(&req, out) {
                        continue;
                    }
                    // Not a plain value request: decoded as a whole.
                    match decode_frame(frame, limits) {
                        Ok(msg) => msg,
                        Err(e) => break Err(e),
                    }
                }
                Ok(Some(Next::Value(msg))) => {
                    got = true;
                    msg
                }
                Ok(None) => break Ok(()),
                Err(WireError::Refused { seq, error }) => {
                    got = true;
                    self.run_values(out);
                    let e = CmdError::Invalid(error.to_string());
                    encode_msg(&self.server, error_fields(seq, &e), out);
                    continue;
                }
                Err(e) => break Err(e),
            };
            // Everything else replies in order, and may lock the state
            // itself.
            self.run_values(out);
            self.dispatch(msg, out);
        };
        self.run_values(out);
        if got {
            self.last_message = Some(Instant::now());
        }
        res
    }

    /// Queues `req` for [`Conn::run_values`] if it is a plain value request
    /// (`get_value`, `set_value`, `delete_value`, or an `_internal` form, of
    /// a logged-in client, not part of a stream) read in place, as
    /// [`Conn::dispatch`] would run it decoded. Its arguments are decoded
    /// here, before the run takes the state. Returns whether it did; if
    /// not, nothing happened, and the request is for [`Conn::dispatch`].
    fn queue_value(&mut self, req: &Request<'_>, out: &mut Vec<u8>) -> bool {
        let Some(action) = req.action().and_then(Action::parse) else {
            return false;
        };
        if !matches!(
            action,
            Action::GetValue { .. } | Action::SetValue { .. } | Action::DeleteValue { .. }
        ) || req.has_state()
            || !self.login.logged_in
        {
            return false;
        }
        let Some(seq) = req.seq().filter(|&s| s != 0) else {
            return false;
        };
        if self.test_users.contains(&seq) || self.stream_window(seq).is_some() {
            return false;
        }
        let args = req.value_args(&mut self.names);
        self.run.push(Pending { action, seq, args });
        if self.run.len() == MAX_BATCH {
            self.run_values(out);
        }
        true
    }

    /// Runs the queued value requests under one hold of the state
    /// ([`Batch`]), then, with the state let go, replies to them in order.
    /// The hold covers only what needs the state: the requests were decoded
    /// before, the replies are encoded (and the arguments dropped) after,
    /// so other connections wait for the state no longer than that.
    fn run_values(&mut self, out: &mut Vec<u8>) {
        if self.run.is_empty() {
            return;
        }
        let mut run = std::mem::take(&mut self.run);
        let mut results = std::mem::take(&mut self.results);
        let mut hints = std::mem::take(&mut self.hints);
        if run.len() > 1 {
            hints.extend(run.iter().filter_map(|p| self.hint(p)));
        }
        {
            let server = self.server.clone();
            let mut batch = Batch::new(server.store(), &hints);
            results.extend(
                run.iter_mut()
                    .map(|p| self.act_value(p.action, &mut p.args, &mut batch)),
            );
            // Dropping `batch` lets the state go and announces the changes.
        }
        for (p, res) in run.drain(..).zip(results.drain(..)) {
            self.answer(p.action, p.seq, out, |c, out| c.reply(p.seq, res, out));
        }
        hints.clear();
        self.run = run;
        self.results = results;
        self.hints = hints;
    }

    /// The entry request `p` names, for a look-ahead (`None`: none, or a
    /// path the request itself will refuse).
    fn hint(&self, p: &Pending) -> Option<Path> {
        let meta = match p.action {
            Action::GetValue { meta }
            | Action::SetValue { meta }
            | Action::DeleteValue { meta } => meta,
            _ => return None,
        };
        let rel = path_from_value(p.args.path.as_ref()?)?;
        self.view.resolve(&rel, meta).ok()
    }

    /// Runs `run`, which replies to request `seq` of `action`. The reply
    /// to a change is noted: under `fsync = always` it waits for the disk,
    /// and it becomes an error if the change cannot be written.
    fn answer(
        &mut self,
        action: Action,
        seq: u64,
        out: &mut Vec<u8>,
        run: impl FnOnce(&mut Conn, &mut Vec<u8>),
    ) {
        if !action.mutates() {
            return run(self, out);
        }
        self.changed = true;
        let start = out.len();
        run(self, out);
        self.change_replies.push((seq, start..out.len()));
    }

    /// When the connection will have been silent for too long, unless a
    /// message arrives; `None`: never (no idle timeout).
    fn silence_deadline(&self) -> Option<Instant> {
        let limits = &self.server.opts.connections;
        let Some(last) = self.last_message else {
            return Some(self.connected + limits.handshake_timeout);
        };
        let idle = limits.idle_timeout?;
        if !self.tasks.is_empty() {
            // A stream or file task runs: not idle; look again later.
            return Some(Instant::now() + idle);
        }
        let ended = *self.tasks_ended.lock().unwrap_or_else(|e| e.into_inner());
        Some(last.max(ended) + idle)
    }

    /// Why the connection is closed for silence, if its time has come.
    fn too_silent(&self) -> Option<String> {
        let limits = &self.server.opts.connections;
        if self.silence_deadline()? > Instant::now() {
            return None;
        }
        Some(match (self.last_message, limits.idle_timeout) {
            (Some(_), Some(idle)) => format!("closing: no request for {idle:?}"),
            _ => format!(
                "closing: no complete request within {:?} of connecting",
                limits.handshake_timeout
            ),
        })
    }

    /// Tells the client why it is closed (if it reads within a second).
    async fn close_with(&self, why: String) -> String {
        let mut out = Vec::new();
        encode_msg(&self.server, vec![("error", Value::str(&why))], &mut out);
        let _ = tokio::time::timeout(Duration::from_secs(1), self.write(&out)).await;
        why
    }

    /// Sends a batch of replies — under `fsync = always` only once its
    /// changes are on disk.
    async fn flush(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        let replies = std::mem::take(&mut self.change_replies);
        if std::mem::take(&mut self.changed) {
            if let Err(why) = self.wait_durable().await {
                // Never acknowledge a change that did not reach the disk:
                // its requests get an error instead (the connection stays).
                *out = self.refuse_changes(out, &replies, &why);
            }
        }
        if !out.is_empty() {
            self.write(out)
                .await
                .map_err(|e| format!("write failed: {e}"))?;
            out.clear();
            if out.capacity() > (1 << 20) {
                *out = Vec::new();
            }
        }
        Ok(())
    }

    /// Reports an unrecoverable input error and ends the connection.
    async fn fatal(&mut self, e: WireError) -> String {
        if !matches!(e, WireError::Io(_)) {
            tracing::info!(error = %e, "closing client connection after bad input");
            let mut out = Vec::new();
            encode_msg(
                &self.server,
                vec![("error", Value::str(&e.to_string()))],
                &mut out,
            );
            let _ = self.write(&out).await;
        }
        e.to_string()
    }

    /// Runs `task` as one of the connection's tasks (which keep it from
    /// being idle).
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let ended = self.tasks_ended.clone();
        self.tasks.spawn(async move {
            task.await;
            *ended.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        });
    }

    /// Runs `work` as one of the connection's tasks and sends its reply to
    /// request `seq` once it is done.
    fn reply_later(
        &self,
        seq: u64,
        work: impl Future<Output = CmdResult<Fields>> + Send + 'static,
    ) {
        let server = self.server.clone();
        let tx = self.tx.clone();
        self.spawn(async move {
            let m = match work.await {
                Ok(mut m) => {
                    put(&mut m, "seq", Value::uint(seq));
                    m
                }
                Err(e) => error_fields(Some(seq), &e),
            };
            let mut buf = Vec::new();
            encode_msg(&server, m, &mut buf);
            let _ = tx.send(buf).await;
        });
    }

    /// Under `fsync = always`, waits until every change made so far is on
    /// disk (group commit: one wait covers the whole batch).
    /// Fails, saying why, if they are not on disk and cannot be written
    /// now (they may be written later, once the writer succeeds again).
    async fn wait_durable(&self) -> Result<(), String> {
        let Some(d) = self.server.durability() else {
            return Ok(());
        };
        if d.fsync() != distkv_log::writer::FsyncPolicy::Always {
            return Ok(());
        }
        let target = self.server.state().log().next_seq() - 1;
        tokio::select! {
            r = d.wait_durable(target) => r,
            // Nothing is sent any more.
            _ = self.cancel.cancelled() => Ok(()),
        }
    }

    /// The batch `out` with the replies to the change requests `replies`
    /// replaced by an error saying the history cannot be written.
    fn refuse_changes(
        &self,
        out: &[u8],
        replies: &[(u64, std::ops::Range<usize>)],
        why: &str,
    ) -> Vec<u8> {
        let e = CmdError::Server(format!(
            "the history cannot be written: {why}; the change is not acknowledged (it may \
             still be written once the disk recovers); retry later"
        ));
        let mut new = Vec::with_capacity(out.len());
        let mut at = 0;
        for (seq, r) in replies {
            new.extend_from_slice(&out[at..r.start]);
            encode_msg(&self.server, error_fields(Some(*seq), &e), &mut new);
            at = r.end;
        }
        new.extend_from_slice(&out[at..]);
        new
    }

    /// Writes `bytes`, unless the server shuts down first (a client that
    /// does not read must not hold up the shutdown).
    async fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        tokio::select! {
            r = async { self.wr.lock().await.write_all(bytes).await } => r,
            _ = self.cancel.cancelled() => Err(std::io::Error::other("server shutting down")),
        }
    }

    fn greeting(&self, out: &mut Vec<u8>) {
        let tick = self.server.state().tick();
        let mut m = vec![
            ("seq", Value::Int(0)),
            (
                "version",
                Value::Array(VERSION.iter().map(|v| Value::uint(*v)).collect()),
            ),
            ("node", Value::str(self.server.name())),
            ("tick", tick.map_or(Value::Nil, Value::uint)),
            ("tock", Value::uint(self.server.next_tock())),
            ("qlen", Value::uint(self.server.opts.buffer)),
        ];
        if let Some(a) = auth::greeting_field(&self.server) {
            put(&mut m, "auth", a);
        }
        encode_msg(&self.server, m, out);
    }

    fn reply(&self, seq: u64, res: CmdResult<Fields>, out: &mut Vec<u8>) {
        let m = match res {
            Ok(mut m) => {
                put(&mut m, "seq", Value::uint(seq));
                m
            }
            Err(e) => error_fields(Some(seq), &e),
        };
        encode_msg(&self.server, m, out);
    }

    fn dispatch(&mut self, msg: Value, out: &mut Vec<u8>) {
        if msg.as_map().is_none() {
            let e = CmdError::Invalid(format!("a request must be a map, not {}", msg.type_name()));
            return encode_msg(&self.server, error_fields(None, &e), out);
        }
        let Some(seq) = msg.get("seq").and_then(Value::as_u64) else {
            let e = CmdError::Invalid("a request needs a non-negative integer 'seq'".into());
            return encode_msg(&self.server, error_fields(None, &e), out);
        };
        if seq == 0 {
            return self.hello(&msg, out);
        }
        if self.test_users.remove(&seq) {
            return self.test_user_named(seq, &msg, out);
        }
        if let Some(window) = self.stream_window(seq) {
            if let Some(ack) = msg.get("ack").and_then(Value::as_u64) {
                if let Some(w) = window {
                    w.ack(ack);
                }
            }
            return;
        }
        if matches!(
            msg.get("state").and_then(Value::as_str),
            Some("ack" | "end")
        ) {
            // Flow control for a stream that has already ended: the client
            // acknowledges what it read after our `end`. Nothing to do.
            return;
        }
        let Some(action) = msg.get("action").and_then(Value::as_str) else {
            return self.reply(
                seq,
                Err(CmdError::Invalid("missing field 'action'".into())),
                out,
            );
        };
        if msg.get("state").and_then(Value::as_str) == Some("start") {
            if action == "auth_set" && msg.get("typ").and_then(Value::as_str) == Some("_test") {
                return self.start_test_user(seq, out);
            }
            let e = CmdError::Invalid(format!("action {action:?} does not take a client stream"));
            return self.reply(seq, Err(e), out);
        }
        let Some(action) = Action::parse(action) else {
            let e = CmdError::Invalid(format!("unknown action {action:?}"));
            return self.reply(seq, Err(e), out);
        };
        if !self.login.logged_in && !action.before_login() {
            return self.reply(seq, Err(auth::no_auth()), out);
        }
        if action.administers() {
            if let Err(e) = self.view.may_use_meta() {
                return self.reply(seq, Err(e), out);
            }
        }
        if let Action::GetValue { .. } | Action::SetValue { .. } | Action::DeleteValue { .. } =
            action
        {
            let args = ValueArgs::from_msg(&msg);
            self.run.push(Pending { action, seq, args });
            return self.run_values(out);
        }
        self.answer(action, seq, out, |c, out| c.act(action, seq, msg, out));
    }

    /// Runs request `seq` and replies.
    fn act(&mut self, action: Action, seq: u64, msg: Value, out: &mut Vec<u8>) {
        let s = &*self.server;
        let res = match action {
            Action::GetValue { .. } | Action::SetValue { .. } | Action::DeleteValue { .. } => Err(
                CmdError::Server(format!("{action:?} runs with the value requests")),
            ),
            Action::Enumerate { meta } => handlers::enumerate(s, &self.view, &msg, meta),
            Action::GetTock => Ok(handlers::get_tock(s)),
            Action::GetState => handlers::get_state(s, &msg),
            Action::Update => handlers::update(s, &self.view, &msg),
            Action::EnumNode => handlers::enum_node(s, &msg),
            Action::Root => handlers::chroot(s, &mut self.view, &msg),
            Action::Stop => Ok(self.stop(&msg)),
            Action::DeleteTree => return self.delete_tree(seq, &msg, out),
            Action::Save => return self.save(seq, &msg, out),
            Action::Log => return self.log(seq, &msg, out),
            Action::Stream(kind) => return self.start_stream(kind, seq, msg, out),
            Action::MsgSend => super::bus_msgs::send(s, &self.view, &msg),
            Action::TestAcl => handlers::test_acl(s, &self.view, &msg),
            Action::KillNode => super::bus_msgs::kill_node(s, &msg),
            Action::FakeInfo { send } => super::bus_msgs::fake_info(s, &msg, send),
            Action::DiffieHellman => return self.diffie_hellman(seq, &msg, out),
            Action::Auth => return self.auth(seq, &msg, out),
            Action::AuthSet => auth::auth_set(s, &self.login, &msg),
            Action::AuthGet => auth::auth_get(s, &msg),
            Action::AuthList => return self.auth_list(seq, &msg, out),
            Action::SetAuthTyp => auth::set_auth_typ(s, &msg),
            Action::AuthInfo => auth::auth_info(s, &msg),
        };
        self.reply(seq, res, out);
    }

    /// Runs a value request (`get_value`, `set_value`, `delete_value`, or
    /// an `_internal` form) in `batch`; its value is taken out of `args`.
    fn act_value(
        &self,
        action: Action,
        args: &mut ValueArgs,
        batch: &mut Batch<'_>,
    ) -> CmdResult<Fields> {
        let s = &*self.server;
        match action {
            Action::GetValue { meta } => {
                handlers::get_value_in(batch.read(), s, &self.view, args, meta)
            }
            Action::SetValue { meta } => match args.value.take() {
                Some(v) => handlers::set_value_in(batch.tx(), s, &self.view, args, Some(v), meta),
                None => Err(CmdError::Client(
                    "Call 'delete_value' if you want to clear the value".into(),
                )),
            },
            Action::DeleteValue { meta } => match args.value {
                Some(_) => Err(CmdError::Client(
                    "A deleted entry can't have a value".into(),
                )),
                None => handlers::set_value_in(batch.tx(), s, &self.view, args, None, meta),
            },
            _ => Err(CmdError::Server(format!(
                "{action:?} is not a value request"
            ))),
        }
    }

    /// `diffie_hellman`: the exponentiations run on a blocking thread
    /// (measured: the node's side of a 1024-length exchange, group 14,
    /// takes about 160 ms in a debug build, too long for the reactor).
    fn diffie_hellman(&mut self, seq: u64, msg: &Value, out: &mut Vec<u8>) {
        match auth::diffie_hellman(&self.login, msg) {
            Ok(work) => self.reply_later(seq, async move {
                // At most three exchanges compute at once, as in DistKV: a
                // flood of them waits instead of taking every core.
                let _permit = auth::CRYPTO_LIMIT
                    .acquire()
                    .await
                    .map_err(|e| CmdError::Server(format!("diffie_hellman: {e}")))?;
                tokio::task::spawn_blocking(work).await.map_err(|e| {
                    CmdError::Server(format!("diffie_hellman: the task failed: {e}"))
                })?
            }),
            Err(e) => self.reply(seq, Err(e), out),
        }
    }

    /// `auth`: an empty stream (`start`, `end`) when the login holds.
    fn auth(&mut self, seq: u64, msg: &Value, out: &mut Vec<u8>) {
        match auth::auth(&self.server, &mut self.login, msg) {
            Ok(Some(bound)) => {
                self.view.access = bound.access;
                self.view.conv = bound.conv;
            }
            Ok(None) => {}
            Err(e) => return self.reply(seq, Err(e), out),
        }
        let state = |s: &str| vec![("state", Value::str(s))];
        self.reply(seq, Ok(state("start")), out);
        self.reply(seq, Ok(state("end")), out);
    }

    /// `auth_list`: one reply for one `ident`, else a stream of users.
    fn auth_list(&mut self, seq: u64, msg: &Value, out: &mut Vec<u8>) {
        let items = match auth::auth_list(&self.server, msg) {
            Ok(i) => i,
            Err(e) => return self.reply(seq, Err(e), out),
        };
        if msg.get("ident").is_some() {
            let one = items.into_iter().next().unwrap_or_default();
            return self.reply(seq, Ok(one), out);
        }
        let state = |s: &str| vec![("state", Value::str(s))];
        self.reply(seq, Ok(state("start")), out);
        for m in items {
            self.reply(seq, Ok(m), out);
        }
        self.reply(seq, Ok(state("end")), out);
    }

    /// `auth_set` of a `_test` user as DistKV's client sends it: a client
    /// stream. The node asks for the name (`step: GiveName`); the client's
    /// next message on the stream (`step: HasName`) brings it.
    fn start_test_user(&mut self, seq: u64, out: &mut Vec<u8>) {
        if !self.login.logged_in {
            return self.reply(seq, Err(auth::no_auth()), out);
        }
        if let Err(e) = self.view.may_use_meta() {
            return self.reply(seq, Err(e), out);
        }
        if self.test_users.len() >= MAX_STREAMS {
            let e = CmdError::Server(format!("too many concurrent streams (limit {MAX_STREAMS})"));
            return self.reply(seq, Err(e), out);
        }
        self.test_users.insert(seq);
        self.reply(seq, Ok(vec![("state", Value::str("start"))]), out);
        self.reply(seq, Ok(vec![("step", Value::str("GiveName"))]), out);
    }

    /// The client's `HasName`: creates the user, replies as `set_value`
    /// does, and ends the stream.
    fn test_user_named(&mut self, seq: u64, msg: &Value, out: &mut Vec<u8>) {
        let res = match (
            msg.get("step").and_then(Value::as_str),
            msg.get("name").and_then(Value::as_str),
        ) {
            (Some("HasName"), Some(name)) => {
                self.changed = true;
                auth::set_test_user(&self.server, &Value::Map(Vec::new()), name)
            }
            _ => Err(CmdError::Invalid(format!(
                "expected {{step: HasName, name}}, not {msg}"
            ))),
        };
        let start = out.len();
        self.reply(seq, res, out);
        self.change_replies.push((seq, start..out.len()));
        self.reply(seq, Ok(vec![("state", Value::str("end"))]), out);
    }

    /// `{seq: 0, qlen: n}`: the client's flow-control window.
    fn hello(&mut self, msg: &Value, out: &mut Vec<u8>) {
        let Some(q) = msg.get("qlen") else { return };
        match q.as_u64() {
            Some(n) if n == 0 || n >= 4 => self.qlen = n.min(self.server.opts.buffer),
            _ => {
                let e = CmdError::Invalid(format!("qlen must be 0 or at least 4, not {q}"));
                self.reply(0, Err(e), out);
            }
        }
    }

    /// If `seq` belongs to a running stream, returns its window.
    fn stream_window(&self, seq: u64) -> Option<Option<Arc<Window>>> {
        if self.tasks.is_empty() {
            // Every stream is one of the tasks, and leaves `streams` before
            // its task ends.
            return None;
        }
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams.get(&seq).map(|s| s.window.clone())
    }

    fn stop(&self, msg: &Value) -> Fields {
        let task = msg.get("task").and_then(Value::as_u64);
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let found = task
            .and_then(|t| streams.get(&t))
            .map(|s| s.cancel.cancel())
            .is_some();
        vec![("result", Value::Bool(found))]
    }

    /// `save`: writes a snapshot to a file in the export directory
    /// (`full`: with the meta tree). Runs on a blocking thread; the reply
    /// comes when the file is durable.
    fn save(&mut self, seq: u64, msg: &Value, out: &mut Vec<u8>) {
        let target = match export::target(&self.server, &self.view, "save", msg) {
            Ok(t) => t,
            Err(e) => return self.reply(seq, Err(e), out),
        };
        let full = msg.get("full").is_some_and(Value::truthy);
        let server = self.server.clone();
        self.reply_later(seq, async move {
            tokio::task::spawn_blocking(move || export::save(&server, &target, full))
                .await
                .map_err(|e| CmdError::Server(format!("save: the task failed: {e}")))??;
            Ok(vec![("result", Value::Bool(true))])
        });
    }

    /// `log`: starts a change log in a file of the export directory
    /// (`fetch`: with the full state first); without `path`, stops every
    /// log.
    fn log(&mut self, seq: u64, msg: &Value, out: &mut Vec<u8>) {
        let target = match msg.get("path") {
            None | Some(Value::Nil) => export::may_write_files(&self.view, "log").map(|()| None),
            Some(_) => export::target(&self.server, &self.view, "log", msg).map(Some),
        };
        let target = match target {
            Ok(t) => t,
            Err(e) => return self.reply(seq, Err(e), out),
        };
        let fetch = msg.get("fetch").is_some_and(Value::truthy);
        let server = self.server.clone();
        self.reply_later(seq, async move {
            match target {
                Some(t) => export::start_log(server, t, fetch).await?,
                None => export::stop_logs(&server).await,
            }
            Ok(vec![("result", Value::Bool(true))])
        });
    }

    fn start_stream(&mut self, kind: Kind, seq: u64, msg: Value, out: &mut Vec<u8>) {
        let qlen = match int_field(&msg, "qlen", 0) {
            Ok(q) if q > 0 => q as u64,
            Ok(_) => self.qlen,
            Err(e) => return self.reply(seq, Err(e), out),
        };
        let window = (qlen > 0).then(|| Arc::new(Window::new(qlen)));
        let cancel = self.cancel.child_token();
        {
            let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            if streams.len() >= MAX_STREAMS {
                drop(streams);
                let e =
                    CmdError::Server(format!("too many concurrent streams (limit {MAX_STREAMS})"));
                return self.reply(seq, Err(e), out);
            }
            streams.insert(
                seq,
                StreamCtl {
                    cancel: cancel.clone(),
                    window: window.clone(),
                },
            );
        }
        let sout = StreamOut::new(self.server.clone(), seq, self.tx.clone(), window);
        let streams = self.streams.clone();
        let server = self.server.clone();
        let view = self.view.clone();
        self.spawn(async move {
            stream::run(kind, server, view, msg, sout, cancel).await;
            streams
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&seq);
        });
    }

    /// `delete_tree`: with `nchain = 0` one reply `{changed: n}`; otherwise
    /// a stream of the deletion events with their old values.
    fn delete_tree(&mut self, seq: u64, msg: &Value, out: &mut Vec<u8>) {
        let res = (|| {
            let rel = req_path(msg)?;
            if rel.is_empty() {
                return Err(CmdError::Client("You can't delete the root node".into()));
            }
            let path = self.view.resolve(&rel, false)?;
            Ok((rel, path, int_field(msg, "nchain", 0)?))
        })();
        let (rel, path, nchain) = match res {
            Ok(x) => x,
            Err(e) => return self.reply(seq, Err(e), out),
        };
        let depth = path.len();
        let change = Change::DeleteTree { path };
        let mut tx = self.server.store().begin();
        let events = match tx.commit_as(Road::Client, &self.view.access, change) {
            Ok(c) => c.deleted(),
            Err(e) => return self.reply(seq, Err(CmdError::from_change(e)), out),
        };
        drop(tx);
        if nchain == 0 {
            let m = vec![("changed", Value::uint(events.len() as u64))];
            return self.reply(seq, Ok(m), out);
        }
        let state = |s: &str| vec![("state", Value::str(s))];
        self.reply(seq, Ok(state("start")), out);
        let mut shortener = Shortener::new(depth, rel.is_empty());
        let st = self.server.state();
        for (ev, old) in events {
            let mut m = chain_fields(&ev.chain, nchain);
            if let Some(old) = old {
                let rules = self.server.store().rules();
                match self.view.encode(rules, &st, &ev.path, old) {
                    Ok(old) => put(&mut m, "old_value", old),
                    Err(e) => {
                        drop(st);
                        return self.reply(seq, Err(e), out);
                    }
                }
            }
            put(&mut m, "tock", Value::uint(ev.tock));
            shortener.apply(&ev.path, &mut m);
            self.reply(seq, Ok(m), out);
        }
        self.reply(seq, Ok(state("end")), out);
    }
}

fn error_fields(seq: Option<u64>, e: &CmdError) -> Fields {
    let mut m = vec![("error", Value::str(&e.to_string()))];
    if let Some(t) = e.etype() {
        put(&mut m, "etype", Value::str(t));
    }
    if let Some(s) = seq {
        put(&mut m, "seq", Value::uint(s));
    }
    m
}
