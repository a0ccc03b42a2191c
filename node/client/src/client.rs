//! An async DistKV client: one TCP connection, many concurrent requests.
//!
//! [`Client::connect`] reads the server's greeting and negotiates flow
//! control (`qlen`). Two background tasks then own the socket: a writer task
//! encodes queued messages in batches, and a reader task routes every
//! incoming message by `seq` to the request waiting for it. A request's first
//! reply decides its shape: `state: "start"` turns it into a [`Stream`],
//! anything else is the single reply. A stream's messages are not decoded
//! by the reader: it reads each once in place, checked (its fields, see
//! [`crate::raw`]; the same walk finds where the message ends), routes it
//! by its `seq` and hands it over as bytes with its fields, one batch per
//! run of messages read; the stream decodes ([`Stream::next`]) or reads
//! them as they are ([`Stream::next_raw`]), and a malformed one ends that
//! stream with an error.
//!
//! Invariants: a request's route is registered, its `seq` allocated and its
//! message queued under one lock, so `seq`s go out in increasing order and a
//! reply can never arrive before its route exists. When the connection dies,
//! every pending request and stream fails with [`ClientError::Closed`], and
//! so does every later request. Flow-control acks are sent when the *caller*
//! reads stream messages (not when they arrive), so a slow consumer stalls
//! the server's stream instead of growing memory; with `qlen = 0` there is no
//! flow control and an unread stream eventually stalls the whole connection.
//! Dropping a [`Stream`] before its end sends `stop` for it.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use distkv_model::codec::{self, DecodeError, Limits};
use distkv_model::{Path, Value};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::raw::{self, Fields, MsgView};
use crate::tls::{Connector, ReadHalf, Socket, WriteHalf};
use crate::wire::{MsgReader, MsgWriter, WireError};

/// The default TCP port of DistKV's client protocol.
pub const DEFAULT_PORT: u16 = 27586;
/// The flow-control window the client asks for by default; the node
/// offers at most its `server.buffer` (DistKV's client asks for 10, which
/// makes big streams wait for acknowledgements every few messages).
pub const DEFAULT_QLEN: u64 = 1024;
/// The default time allowed for connecting and receiving the greeting.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Buffered messages per stream when there is no flow control.
const UNCONTROLLED_STREAM_BUFFER: usize = 256;
/// The writer task stops batching once this many bytes are pending.
const WRITE_BATCH: usize = 64 << 10;

/// What went wrong, named by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached: check the address or retry later.
    #[error("cannot connect: {0}")]
    Connect(#[source] io::Error),
    /// The server did not complete the connection in time: retry later.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// The caller passed an option the protocol does not allow: fix the call.
    #[error("invalid option: {0}")]
    InvalidOption(&'static str),
    /// The server refused the request; the text is its error message.
    #[error("server error: {0}")]
    Server(String),
    /// The server refused the connection instead of greeting (e.g. a node
    /// still fetching the cluster's data); the text says why: retry later.
    #[error("{0}")]
    Refused(String),
    /// The peer broke the protocol (bad greeting, stream where a single reply
    /// belongs, …): give up on this connection or this request.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The connection is gone (the text says why): reconnect.
    #[error("connection closed: {0}")]
    Closed(String),
    /// Reading or writing the raw connection failed: close it.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The TLS handshake failed (e.g. the server's certificate is not
    /// signed by the CA given, or the server does not speak TLS): fix the
    /// TLS settings.
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] io::Error),
}

/// How to connect.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Time allowed for the TCP connect, the greeting and the hello.
    pub timeout: Duration,
    /// The largest flow-control window wanted: 0 disables flow control,
    /// 1 to 3 are invalid. The window used is the smaller of this and the
    /// server's offer.
    pub qlen: u64,
    /// Limits applied to every message received.
    pub limits: Limits,
    /// TLS (`connect.ssl`); `None`: plain TCP.
    pub tls: Option<Connector>,
}

impl Default for ConnectOptions {
    fn default() -> ConnectOptions {
        ConnectOptions {
            timeout: DEFAULT_TIMEOUT,
            qlen: DEFAULT_QLEN,
            // What a node sends is within its budget: room for all of it.
            limits: distkv_model::budget::INTERNAL_LIMITS,
            tls: None,
        }
    }
}

/// Opens the connection: TCP, then the TLS handshake if `tls` is given.
/// The caller bounds how long it may take.
pub async fn open(
    addr: impl ToSocketAddrs,
    tls: Option<&Connector>,
) -> Result<Socket, ClientError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(ClientError::Connect)?;
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY: {e}");
    }
    match tls {
        None => Ok(Socket::Plain(tcp)),
        Some(c) => c.connect(tcp).await.map_err(ClientError::Tls),
    }
}

/// The server's unsolicited first message.
#[derive(Clone, Debug)]
pub struct Greeting {
    /// The server's node name.
    pub node: String,
    /// The node's current tick, if it has one.
    pub tick: Option<u64>,
    /// The server's tock.
    pub tock: u64,
    /// The flow-control window the server offers (0: none).
    pub qlen: u64,
    /// The server's version, e.g. `[0, 63, 3]`.
    pub version: Vec<u64>,
    /// Authentication methods; the first is the one required (nil: none).
    pub auth: Vec<Value>,
    /// The whole greeting message.
    pub raw: Value,
}

impl Greeting {
    fn parse(raw: Value) -> Result<Greeting, ClientError> {
        if raw.get("seq").is_none() {
            if let Some(why) = raw.get("error").and_then(Value::as_str) {
                return Err(ClientError::Refused(why.to_string()));
            }
        }
        if raw.as_map().is_none() || raw.get("seq").and_then(Value::as_u64) != Some(0) {
            return Err(ClientError::Protocol(format!(
                "expected a greeting with seq 0, got {raw}"
            )));
        }
        let node = match raw.get("node") {
            Some(Value::Str(s)) => s.to_string(),
            _ => {
                return Err(ClientError::Protocol(format!(
                    "greeting has no node name: {raw}"
                )))
            }
        };
        let u64_of = |key| raw.get(key).and_then(Value::as_u64);
        let list = |key| raw.get(key).and_then(Value::as_array).unwrap_or(&[]);
        Ok(Greeting {
            node,
            tick: u64_of("tick"),
            tock: u64_of("tock").unwrap_or(0),
            qlen: u64_of("qlen").unwrap_or(0),
            version: list("version").iter().filter_map(Value::as_u64).collect(),
            auth: list("auth").to_vec(),
            raw,
        })
    }
}

/// A connection to a DistKV server. Cheap to clone; all clones share the
/// connection, which closes when the last clone and [`Stream`] are dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// Messages for the writer task; dropping it ends that task.
    tx: mpsc::UnboundedSender<Value>,
    greeting: Greeting,
    qlen: u64,
    /// The limits every received message is checked against.
    limits: Limits,
    reader: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// State shared with the background tasks.
struct Shared {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    last_seq: u64,
    routes: HashMap<u64, Route>,
    /// Why the connection is gone, once it is.
    closed: Option<String>,
    /// The key agreed by `diffie_hellman` (once per connection; see
    /// [`crate::auth`]).
    session_key: Option<crate::login::SessionKey>,
    /// The `diffie_hellman` key length to ask for; `None`: DistKV's
    /// default (see [`Client::set_key_length`]).
    key_length: Option<u32>,
}

/// Where the reader task sends messages carrying a given `seq`.
enum Route {
    /// No reply yet.
    Waiting(oneshot::Sender<Result<First, ClientError>>),
    /// A stream has started: its messages go to it as they are received,
    /// undecoded, in batches (see [`Outbox`]).
    Streaming(mpsc::Sender<Batch>),
}

/// Stream messages handed over at once: their bytes, one after the
/// other, and, for each, its length and what the connection's reader found
/// when it read it (its fields, or why it is malformed).
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    read: Vec<(usize, Result<Fields, DecodeError>)>,
}

/// A request's first reply.
enum First {
    Single(Value),
    Stream {
        start: Value,
        rx: mpsc::Receiver<Batch>,
    },
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the connection dead and fails everything pending.
    fn close(&self, reason: String) {
        let (reason, routes) = {
            let mut st = self.lock();
            let reason = st.closed.get_or_insert(reason).clone();
            (reason, std::mem::take(&mut st.routes))
        };
        for route in routes.into_values() {
            // Dropping a stream's sender ends it with `closed_error`.
            if let Route::Waiting(tx) = route {
                let _ = tx.send(Err(ClientError::Closed(reason.clone())));
            }
        }
    }

    fn closed_error(&self) -> ClientError {
        let reason = self.lock().closed.clone();
        ClientError::Closed(reason.unwrap_or_else(|| "the connection is gone".into()))
    }
}

impl Inner {
    /// Allocates a `seq`, registers `route` and queues the request, atomically.
    fn submit(
        &self,
        action: &str,
        fields: Vec<(&str, Value)>,
        route: Option<Route>,
    ) -> Result<u64, ClientError> {
        let mut msg = Vec::with_capacity(fields.len() + 2);
        msg.push((Value::str("seq"), Value::Nil));
        msg.push((Value::str("action"), Value::str(action)));
        msg.extend(fields.into_iter().map(|(k, v)| (Value::str(k), v)));
        let mut st = self.shared.lock();
        if let Some(reason) = &st.closed {
            return Err(ClientError::Closed(reason.clone()));
        }
        let seq = st.last_seq + 1;
        msg[0].1 = Value::uint(seq);
        if self.tx.send(Value::Map(msg)).is_err() {
            return Err(ClientError::Closed("the writer has stopped".into()));
        }
        st.last_seq = seq;
        if let Some(route) = route {
            st.routes.insert(seq, route);
        }
        Ok(seq)
    }

    /// Queues a control message (ack) that needs no `seq` of its own.
    fn send_control(&self, msg: Value) {
        // If the writer is gone the connection is closing anyway.
        let _ = self.tx.send(msg);
    }

    /// Forgets the route of `seq`; sends `stop` if it was a started stream,
    /// or if `stop_waiting` and no reply had arrived yet.
    fn abandon(&self, seq: u64, stop_waiting: bool) {
        let route = self.shared.lock().routes.remove(&seq);
        let stop = match route {
            Some(Route::Streaming(_)) => true,
            Some(Route::Waiting(_)) => stop_waiting,
            None => false,
        };
        if stop {
            let _ = self.submit("stop", vec![("task", Value::uint(seq))], None);
        }
    }
}

/// Removes a request's route if the request is cancelled while waiting.
struct PendingGuard<'a> {
    inner: &'a Inner,
    seq: u64,
    stop: bool,
    armed: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.inner.abandon(self.seq, self.stop);
        }
    }
}

fn error_text(e: &Value) -> String {
    match e.as_str() {
        Some(s) => s.to_owned(),
        None => e.to_string(),
    }
}

/// A single reply, or the server's error as [`ClientError::Server`].
fn single_result(msg: Value) -> Result<Value, ClientError> {
    match msg.get("error") {
        Some(e) => Err(ClientError::Server(error_text(e))),
        None => Ok(msg),
    }
}

fn stream_buffer(qlen: u64) -> usize {
    if qlen == 0 {
        UNCONTROLLED_STREAM_BUFFER
    } else {
        // The server never has more than `qlen` unacknowledged messages out.
        qlen.min(4096) as usize + 4
    }
}

impl Client {
    /// Connects, reads the greeting and negotiates flow control, all within
    /// `opts.timeout`.
    pub async fn connect(
        addr: impl ToSocketAddrs,
        opts: ConnectOptions,
    ) -> Result<Client, ClientError> {
        if (1..=3).contains(&opts.qlen) {
            return Err(ClientError::InvalidOption("qlen must be 0 or at least 4"));
        }
        // What the connection waits for, for the timeout's message.
        let waiting = std::sync::atomic::AtomicBool::new(false);
        let setup = async {
            let (r, w) = open(addr, opts.tls.as_ref()).await?.into_split();
            waiting.store(true, std::sync::atomic::Ordering::Relaxed);
            let mut reader = MsgReader::with_limits(r, opts.limits);
            let mut writer = MsgWriter::new(w);
            let first = reader.next().await?.ok_or_else(|| {
                ClientError::Protocol("the server closed the connection before greeting".into())
            })?;
            let greeting = Greeting::parse(first)?;
            let mut qlen = opts.qlen.min(greeting.qlen);
            if qlen < 4 {
                qlen = 0;
            }
            // Sent even for `qlen = 0`: the hello completes the handshake
            // (a server may close a connection that stays silent).
            writer
                .send(&Value::map([
                    ("seq", Value::Int(0)),
                    ("qlen", Value::uint(qlen)),
                ]))
                .await?;
            Ok::<_, ClientError>((reader, writer, greeting, qlen))
        };
        let (reader, writer, greeting, qlen) = tokio::time::timeout(opts.timeout, setup)
            .await
            .map_err(|_| match waiting.load(std::sync::atomic::Ordering::Relaxed) {
                // A TLS server greets nobody who does not start TLS.
                true if opts.tls.is_none() => ClientError::Timeout(
                    "waiting for the server's greeting (if the server uses TLS, connect with TLS: connect.ssl)",
                ),
                true => ClientError::Timeout("waiting for the server's greeting"),
                false => ClientError::Timeout("connecting to the server"),
            })??;

        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(writer, rx, shared.clone()));
        let reader = tokio::spawn(read_loop(reader, shared.clone(), qlen));
        Ok(Client {
            inner: Arc::new(Inner {
                shared,
                tx,
                greeting,
                qlen,
                limits: opts.limits,
                reader,
            }),
        })
    }

    /// The server's greeting.
    pub fn greeting(&self) -> &Greeting {
        &self.inner.greeting
    }

    /// The negotiated flow-control window (0: none).
    pub fn qlen(&self) -> u64 {
        self.inner.qlen
    }

    /// Whether the connection is known to be gone.
    pub fn is_closed(&self) -> bool {
        self.inner.shared.lock().closed.is_some()
    }

    /// Sends `{seq, action, fields…}` and returns the single reply (a map
    /// with `seq` and `tock`). An `error` reply becomes
    /// [`ClientError::Server`]; a streamed reply is a protocol error (the
    /// stream is stopped).
    pub async fn request(
        &self,
        action: &str,
        fields: Vec<(&str, Value)>,
    ) -> Result<Value, ClientError> {
        match self.call(action, fields, false).await? {
            (_, First::Single(msg)) => single_result(msg),
            (seq, First::Stream { start, rx }) => {
                drop(Stream::streaming(self.clone(), seq, start, rx));
                Err(ClientError::Protocol(format!(
                    "`{action}` answered with a stream"
                )))
            }
        }
    }

    /// Sends `{seq, action, fields…}` and returns once the reply has
    /// started. A single (non-stream) reply is returned as a stream of one
    /// item; an `error` reply becomes [`ClientError::Server`].
    pub async fn stream(
        &self,
        action: &str,
        fields: Vec<(&str, Value)>,
    ) -> Result<Stream, ClientError> {
        Ok(match self.call(action, fields, true).await? {
            (seq, First::Single(msg)) => Stream::single(self.clone(), seq, single_result(msg)?),
            (seq, First::Stream { start, rx }) => Stream::streaming(self.clone(), seq, start, rx),
        })
    }

    async fn call(
        &self,
        action: &str,
        fields: Vec<(&str, Value)>,
        stop_on_cancel: bool,
    ) -> Result<(u64, First), ClientError> {
        let (tx, rx) = oneshot::channel();
        let seq = self
            .inner
            .submit(action, fields, Some(Route::Waiting(tx)))?;
        let mut guard = PendingGuard {
            inner: &self.inner,
            seq,
            stop: stop_on_cancel,
            armed: true,
        };
        let first = rx.await.map_err(|_| self.inner.shared.closed_error())??;
        guard.armed = false;
        Ok((seq, first))
    }

    /// `get_value`: the value at `path`, with `nchain` change-chain links.
    pub async fn get_value(&self, path: &Path, nchain: u64) -> Result<Value, ClientError> {
        let fields = vec![
            ("path", Value::Path(path.clone())),
            ("nchain", Value::uint(nchain)),
        ];
        self.request("get_value", fields).await
    }

    /// `set_value`: sets `value` at `path`.
    pub async fn set_value(
        &self,
        path: &Path,
        value: Value,
        opts: &UpdateOptions,
    ) -> Result<Value, ClientError> {
        let mut fields = opts.fields(path);
        fields.push(("value", value));
        self.request("set_value", fields).await
    }

    /// `delete_value`: deletes the value at `path`.
    pub async fn delete_value(
        &self,
        path: &Path,
        opts: &UpdateOptions,
    ) -> Result<Value, ClientError> {
        self.request("delete_value", opts.fields(path)).await
    }

    /// `get_tree`: streams the subtree at `path`. Item paths are full paths
    /// relative to `path` (as Python's `get_tree` yields them).
    pub async fn get_tree(&self, path: &Path, opts: &TreeOptions) -> Result<Stream, ClientError> {
        let s = self.stream("get_tree", opts.fields(path, false)).await?;
        Ok(s.long_paths(&Path::root()))
    }

    /// `get_tree_internal`: as [`Client::get_tree`], for the meta tree
    /// (`path` is relative to its root, the `None` element).
    pub async fn get_tree_internal(
        &self,
        path: &Path,
        opts: &TreeOptions,
    ) -> Result<Stream, ClientError> {
        let s = self
            .stream("get_tree_internal", opts.fields(path, false))
            .await?;
        Ok(s.long_paths(&Path::root()))
    }

    /// The session key this connection agreed by `diffie_hellman`, if it
    /// did (see [`crate::auth`]).
    pub(crate) fn session_key(&self) -> Option<crate::login::SessionKey> {
        self.inner.shared.lock().session_key.clone()
    }

    /// The `diffie_hellman` key length set by [`Client::set_key_length`].
    pub(crate) fn key_length(&self) -> Option<u32> {
        self.inner.shared.lock().key_length
    }

    /// Asks for a `diffie_hellman` key of `length` instead of DistKV's
    /// default 1024 (DistKV's `-D` debug speed-up uses 16). Takes effect
    /// for an exchange not yet made.
    pub fn set_key_length(&self, length: u32) {
        self.inner.shared.lock().key_length = Some(length);
    }

    /// Remembers the session key agreed by `diffie_hellman`.
    pub(crate) fn set_session_key(&self, key: crate::login::SessionKey) {
        self.inner.shared.lock().session_key = Some(key);
    }

    /// `watch`: streams changes below `path` (after the current state if
    /// `opts.fetch`, ended by [`StreamItem::UpToDate`]). Item paths are
    /// absolute (as Python's `watch` yields them).
    pub async fn watch(&self, path: &Path, opts: &TreeOptions) -> Result<Stream, ClientError> {
        let s = self.stream("watch", opts.fields(path, true)).await?;
        Ok(s.long_paths(path))
    }

    /// `get_state`: the node's internal state; each flag (`"nodes"`,
    /// `"known"`, `"missing"`, …) is sent as `true`.
    pub async fn get_state(&self, flags: &[&str]) -> Result<Value, ClientError> {
        let fields = flags.iter().map(|f| (*f, Value::Bool(true))).collect();
        self.request("get_state", fields).await
    }

    /// `enum`: the children of `path` (in the reply's `result`), with their
    /// values if `with_data`.
    pub async fn list(&self, path: &Path, with_data: bool) -> Result<Value, ClientError> {
        let fields = vec![
            ("path", Value::Path(path.clone())),
            ("with_data", Value::Bool(with_data)),
            ("empty", Value::Bool(!with_data)),
        ];
        self.request("enum", fields).await
    }

    /// `delete_tree`: deletes the subtree at `path`; the reply's `changed`
    /// counts the deleted entries.
    pub async fn delete_tree(&self, path: &Path) -> Result<Value, ClientError> {
        let fields = vec![
            ("path", Value::Path(path.clone())),
            ("nchain", Value::Int(0)),
        ];
        self.request("delete_tree", fields).await
    }

    /// `get_tock`: the server's next tock.
    pub async fn get_tock(&self) -> Result<u64, ClientError> {
        let reply = self.request("get_tock", Vec::new()).await?;
        reply
            .get("tock")
            .and_then(Value::as_u64)
            .ok_or_else(|| ClientError::Protocol(format!("get_tock reply without tock: {reply}")))
    }
}

/// Preconditions and options of `set_value` and `delete_value`.
#[derive(Clone, Debug, Default)]
pub struct UpdateOptions {
    /// The expected change chain; `Some(Value::Nil)` means "must be new".
    pub chain: Option<Value>,
    /// The expected previous value (discouraged; use `chain`).
    pub prev: Option<Value>,
    /// Change-chain links wanted in the reply.
    pub nchain: u64,
    /// If true, setting an equal value of the same type is a no-op.
    pub idem: Option<bool>,
}

impl UpdateOptions {
    fn fields(&self, path: &Path) -> Vec<(&'static str, Value)> {
        let mut f = vec![
            ("path", Value::Path(path.clone())),
            ("nchain", Value::uint(self.nchain)),
        ];
        if let Some(c) = &self.chain {
            f.push(("chain", c.clone()));
        }
        if let Some(p) = &self.prev {
            f.push(("prev", p.clone()));
        }
        if let Some(i) = self.idem {
            f.push(("idem", Value::Bool(i)));
        }
        f
    }
}

/// Options of `get_tree` and `watch`.
#[derive(Clone, Debug, Default)]
pub struct TreeOptions {
    /// Change-chain links wanted per entry.
    pub nchain: u64,
    /// Skip entries less deep than this below the path.
    pub min_depth: Option<u64>,
    /// Skip entries deeper than this below the path.
    pub max_depth: Option<u64>,
    /// Also report entries without a value.
    pub empty: bool,
    /// `watch` only: send the current state first.
    pub fetch: bool,
}

impl TreeOptions {
    fn fields(&self, path: &Path, watch: bool) -> Vec<(&'static str, Value)> {
        let mut f = vec![
            ("path", Value::Path(path.clone())),
            ("nchain", Value::uint(self.nchain)),
        ];
        if let Some(d) = self.min_depth {
            f.push(("min_depth", Value::uint(d)));
        }
        if let Some(d) = self.max_depth {
            f.push(("max_depth", Value::uint(d)));
        }
        if self.empty {
            f.push(("empty", Value::Bool(true)));
        }
        if watch && self.fetch {
            f.push(("fetch", Value::Bool(true)));
        }
        f
    }
}

/// One message of a stream.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamItem {
    /// A data message (the whole map, without `wseq`).
    Data(Value),
    /// `state: "uptodate"`: the initial state has been sent (the message,
    /// without `wseq`).
    UpToDate(Value),
}

/// One message of a stream, read in place ([`Stream::next_raw`]).
#[derive(Clone, Copy, Debug)]
pub enum RawItem<'a> {
    /// A data message.
    Data(RawEntry<'a>),
    /// `state: "uptodate"`: the initial state has been sent.
    UpToDate(MsgView<'a>),
}

/// A data message read in place, with its full path if the stream
/// longens paths.
#[derive(Clone, Copy, Debug)]
pub struct RawEntry<'a> {
    /// The message's fields (`path` and `depth` as sent).
    pub msg: MsgView<'a>,
    /// The full path, if the stream longens paths ([`Stream::long_paths`])
    /// and the message had a shortened one; else read `msg.path()` as is.
    pub path: Option<LongPath<'a>>,
}

/// A full path rebuilt from a shortened one ([`PathLongener::apply_raw`]).
#[derive(Clone, Copy, Debug)]
pub struct LongPath<'a> {
    /// Its elements.
    pub elements: &'a [Value],
    /// How many leading elements it shares with the previous message's
    /// full path: only the elements after them are new.
    pub kept: usize,
}

/// The replies of a streamed request, read with [`Stream::next`] (each
/// message decoded) or [`Stream::next_raw`] (read in place).
///
/// Reading acknowledges messages to the server as flow control requires.
/// Dropping the stream before its end sends `stop`.
pub struct Stream {
    client: Client,
    seq: u64,
    /// `None` for a single reply presented as a stream.
    rx: Option<mpsc::Receiver<Batch>>,
    /// Messages received and not yet read: `batch[pos..]`, whole messages
    /// as the connection's reader checked their framing, and what it read
    /// in each from `read[next..]` on (empty for a single reply: read
    /// here).
    /// as the connection's reader checked their framing.
    batch: Vec<u8>,
    pos: usize,
    read: Vec<(usize, Result<Fields, DecodeError>)>,
    next: usize,
    longener: Option<PathLongener>,
    flow: Flow,
    done: bool,
    stopped: bool,
}

/// What a stream has read and acknowledged.
#[derive(Default)]
struct Flow {
    /// Highest `wseq` read, and the last one acknowledged.
    read: u64,
    acked: u64,
}

impl Flow {
    /// Records a message's `wseq` and acknowledges when the window requires.
    fn note(&mut self, wseq: Option<u64>, client: &Client, seq: u64) {
        let Some(w) = wseq else { return };
        self.read = self.read.max(w);
        let qlen = client.inner.qlen;
        if qlen > 0 && self.read - self.acked > qlen / 3 {
            self.acked = self.read;
            client.inner.send_control(Value::map([
                ("seq", Value::uint(seq)),
                ("state", Value::str("ack")),
                ("ack", Value::uint(self.read)),
            ]));
        }
    }
}

impl Stream {
    fn streaming(client: Client, seq: u64, start: Value, rx: mpsc::Receiver<Batch>) -> Stream {
        let wseq = start.get("wseq").and_then(Value::as_u64);
        let mut s = Stream::new(client, seq, Some(rx), Vec::new());
        s.flow.note(wseq, &s.client, seq);
        s
    }

    fn single(client: Client, seq: u64, msg: Value) -> Stream {
        Stream::new(client, seq, None, codec::to_vec(&msg))
    }

    fn new(client: Client, seq: u64, rx: Option<mpsc::Receiver<Batch>>, batch: Vec<u8>) -> Stream {
        Stream {
            client,
            seq,
            rx,
            batch,
            pos: 0,
            read: Vec::new(),
            next: 0,
            longener: None,
            flow: Flow::default(),
            done: false,
            stopped: false,
        }
    }

    /// Expands the server's shortened paths (`path` + `depth`) of later
    /// items into full paths below `prefix` (see [`PathLongener`]).
    pub fn long_paths(mut self, prefix: &Path) -> Stream {
        self.longener = Some(PathLongener::new(prefix));
        self
    }

    /// The request's `seq` (the `task` to name in `stop`).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Waits until a message is there to read; `false` once the stream has
    /// ended.
    async fn fill(&mut self) -> Result<bool, ClientError> {
        while self.pos >= self.batch.len() {
            if self.done {
                return Ok(false);
            }
            let Some(rx) = &mut self.rx else {
                self.done = true;
                return Ok(false);
            };
            match rx.recv().await {
                Some(batch) => {
                    self.batch = batch.bytes;
                    self.read = batch.read;
                    self.pos = 0;
                    self.next = 0;
                }
                None => {
                    self.done = true;
                    return Err(self.client.inner.shared.closed_error());
                }
            }
        }
        Ok(!self.done)
    }

    /// A message that does not decode ends the stream: the server is
    /// told to stop it, and what else it sends for it is dropped.
    fn malformed(&mut self, e: DecodeError) -> ClientError {
        if self.rx.is_some() && !self.done {
            self.client.inner.abandon(self.seq, false);
        }
        self.done = true;
        ClientError::Wire(WireError::Malformed(e))
    }

    /// The next item; `Ok(None)` once the stream has ended. An `error`
    /// message in the stream is returned as [`ClientError::Server`]; reading
    /// on after it continues to the end.
    pub async fn next(&mut self) -> Result<Option<StreamItem>, ClientError> {
        loop {
            if !self.fill().await? {
                return Ok(None);
            }
            let limits = self.client.inner.limits;
            let mut msg = match codec::decode_prefix(&self.batch[self.pos..], limits) {
                Ok((msg, n)) => {
                    self.pos += n;
                    self.next += 1;
                    msg
                }
                Err(e) => return Err(self.malformed(e)),
            };
            let state = Kind::of(msg.get("state").and_then(Value::as_str));
            if state == Kind::End {
                // Acking the end would address a finished task.
                self.done = true;
            } else {
                let wseq = msg.get("wseq").and_then(Value::as_u64);
                self.flow.note(wseq, &self.client, self.seq);
            }
            if let Some(e) = msg.get("error") {
                return Err(ClientError::Server(error_text(e)));
            }
            match state {
                Kind::End => return Ok(None),
                Kind::Skip => continue,
                Kind::UpToDate | Kind::Data => {}
            }
            if let Value::Map(m) = &mut msg {
                m.retain(|(k, _)| k.as_str() != Some("wseq"));
            }
            if state == Kind::UpToDate {
                return Ok(Some(StreamItem::UpToDate(msg)));
            }
            if let Some(l) = &mut self.longener {
                l.apply(&mut msg);
            }
            return Ok(Some(StreamItem::Data(msg)));
        }
    }

    /// As [`Stream::next`], but each message is read in place, not
    /// decoded (see [`crate::raw`]): for consumers of big streams. A data
    /// item's path is longened as [`Stream::next`] longens it, into
    /// [`RawEntry::path`].
    pub async fn next_raw(&mut self) -> Result<Option<RawItem<'_>>, ClientError> {
        // Finds the next item; the view is made once found (a view held
        // across the loop would keep the batch borrowed while it refills).
        let (at, n, fields, kind) = loop {
            if !self.fill().await? {
                return Ok(None);
            }
            let at = self.pos;
            // Read by the connection's reader already, or here.
            let read = match self.read.get(self.next) {
                Some((n, read)) => read.clone().map(|f| (f, *n)),
                None => Fields::parse(&self.batch[at..], self.client.inner.limits),
            };
            self.next += 1;
            let (fields, n) = match read {
                Ok(x) => x,
                Err(e) => return Err(self.malformed(e)),
            };
            self.pos = at + n;
            let (kind, wseq, error) = {
                let msg = MsgView::new(&self.batch[at..at + n], fields);
                let error = msg.error().map(|e| error_text(&raw::decode_field(e)));
                (Kind::of(msg.state()), msg.wseq(), error)
            };
            if kind == Kind::End {
                self.done = true;
            } else {
                self.flow.note(wseq, &self.client, self.seq);
            }
            if let Some(e) = error {
                return Err(ClientError::Server(e));
            }
            match kind {
                Kind::End => return Ok(None),
                Kind::Skip => continue,
                Kind::UpToDate | Kind::Data => break (at, n, fields, kind),
            }
        };
        let msg = MsgView::new(&self.batch[at..at + n], fields);
        if kind == Kind::UpToDate {
            return Ok(Some(RawItem::UpToDate(msg)));
        }
        let path = match &mut self.longener {
            Some(l) => match l.apply_raw(&msg) {
                Ok(p) => p,
                Err(e) => {
                    // As `malformed`, with the batch still borrowed.
                    if self.rx.is_some() && !self.done {
                        self.client.inner.abandon(self.seq, false);
                    }
                    self.done = true;
                    return Err(ClientError::Wire(WireError::Malformed(e)));
                }
            },
            None => None,
        };
        Ok(Some(RawItem::Data(RawEntry { msg, path })))
    }

    /// Asks the server to end this stream (`{action: "stop", task: seq}`).
    /// Keep reading: the stream then ends with `Ok(None)`.
    pub fn stop(&mut self) -> Result<(), ClientError> {
        if self.done || self.stopped || self.rx.is_none() {
            return Ok(());
        }
        self.stopped = true;
        let fields = vec![("task", Value::uint(self.seq))];
        self.client.inner.submit("stop", fields, None).map(drop)
    }
}

/// How [`Stream::next`] treats a message.
#[derive(PartialEq)]
enum Kind {
    End,
    UpToDate,
    Skip,
    Data,
}

impl Kind {
    /// The kind of a message with this `state`.
    fn of(state: Option<&str>) -> Kind {
        match state {
            Some("end") => Kind::End,
            Some("uptodate") => Kind::UpToDate,
            Some("start") | Some("ack") => Kind::Skip,
            _ => Kind::Data,
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.rx.is_some() && !self.done {
            if self.stopped {
                self.client.inner.shared.lock().routes.remove(&self.seq);
            } else {
                self.client.inner.abandon(self.seq, false);
            }
        }
    }
}

/// Undoes the server's path shortening in streamed messages.
///
/// `get_tree` and `watch` send each entry's `path` relative to the previous
/// one: `depth` elements (counted below the request's path) are shared with
/// the previous entry and `path` holds the rest. The longener keeps the last
/// full path and replaces `path` + `depth` by `prefix` + full path below it.
#[derive(Clone, Debug)]
pub struct PathLongener {
    prefix_len: usize,
    last: Vec<Value>,
}

impl PathLongener {
    /// A longener producing paths that start with `prefix`.
    pub fn new(prefix: &Path) -> PathLongener {
        PathLongener {
            prefix_len: prefix.len(),
            last: prefix.elements().to_vec(),
        }
    }

    /// How many elements of the last path a message of `depth` keeps.
    fn keep(&self, depth: u64) -> usize {
        (self.prefix_len as u64)
            .saturating_add(depth)
            .min(self.last.len() as u64) as usize
    }

    /// Rewrites `msg`'s `path` + `depth` into a full `path`. Messages without
    /// `depth` (or without a path) are left alone.
    pub fn apply(&mut self, msg: &mut Value) {
        let Value::Map(m) = msg else { return };
        let Some(di) = m.iter().position(|(k, _)| k.as_str() == Some("depth")) else {
            return;
        };
        let Some(depth) = m[di].1.as_u64() else {
            return;
        };
        let Some(pi) = m.iter().position(|(k, _)| k.as_str() == Some("path")) else {
            return;
        };
        let rest: &[Value] = match &m[pi].1 {
            Value::Path(p) => p,
            Value::Array(a) => a,
            _ => return,
        };
        let keep = self.keep(depth);
        self.last.truncate(keep);
        self.last.extend_from_slice(rest);
        m[pi].1 = Value::Path(Path::new(self.last.clone()));
        m.remove(di);
    }

    /// As [`PathLongener::apply`], for a message read in place: the full
    /// path, decoding only the elements the message sends. `Ok(None)` for
    /// a message [`PathLongener::apply`] leaves alone.
    pub fn apply_raw(&mut self, msg: &MsgView<'_>) -> Result<Option<LongPath<'_>>, DecodeError> {
        let Some(depth) = msg.depth() else {
            return Ok(None);
        };
        let Some(elements) = msg.path().and_then(raw::path_elements) else {
            return Ok(None);
        };
        let keep = self.keep(depth);
        self.last.truncate(keep);
        for e in elements {
            self.last.push(raw::decode(e?)?);
        }
        Ok(Some(LongPath {
            elements: &self.last,
            kept: keep,
        }))
    }

    /// The last full path.
    pub fn last(&self) -> &[Value] {
        &self.last
    }
}

/// Stream messages routed but not yet handed to their streams: one batch
/// per run of messages for the same stream, in the order received.
#[derive(Default)]
struct Outbox {
    batches: Vec<(u64, mpsc::Sender<Batch>, Batch)>,
}

impl Outbox {
    /// Adds a message for stream `seq`, with what was read in it.
    fn push(
        &mut self,
        seq: u64,
        tx: &mpsc::Sender<Batch>,
        frame: &[u8],
        read: Result<Fields, DecodeError>,
    ) {
        let batch = match self.batches.last_mut() {
            Some((s, _, batch)) if *s == seq => batch,
            _ => {
                self.batches.push((seq, tx.clone(), Batch::default()));
                &mut self.batches.last_mut().expect("just pushed").2
            }
        };
        batch.bytes.extend_from_slice(frame);
        batch.read.push((frame.len(), read));
    }

    /// Hands every batch to its stream. Waits only if a consumer lags and
    /// the server ignores flow control (or there is none); a dropped
    /// stream's batches are dropped.
    async fn deliver(&mut self) {
        for (_, tx, batch) in self.batches.drain(..) {
            let _ = tx.send(batch).await;
        }
    }
}

async fn write_loop(
    mut writer: MsgWriter<WriteHalf>,
    mut rx: mpsc::UnboundedReceiver<Value>,
    shared: Arc<Shared>,
) {
    while let Some(msg) = rx.recv().await {
        writer.write(&msg);
        while writer.pending() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(msg) => writer.write(&msg),
                Err(_) => break,
            }
        }
        if let Err(e) = writer.flush().await {
            shared.close(format!("writing to the server failed: {e}"));
            return;
        }
    }
    // Every sender is gone: the client was dropped.
    if let Err(e) = writer.shutdown().await {
        tracing::debug!("closing the connection: {e}");
    }
}

async fn read_loop(mut reader: MsgReader<ReadHalf>, shared: Arc<Shared>, qlen: u64) {
    let limits = reader.limits();
    let mut out = Outbox::default();
    let mut eof = false;
    let reason = loop {
        // Route everything received, then hand the streams their batches.
        let routed = loop {
            match reader.try_next_frame_with(|b| Fields::parse(b, limits)) {
                Ok(Some((frame, read))) => {
                    if let Err(e) = route(&shared, frame, read, qlen, limits, &mut out) {
                        break Err(e);
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        out.deliver().await;
        if let Err(e) = routed {
            break format!("reading from the server failed: {e}");
        }
        if eof {
            break "the server closed the connection".to_owned();
        }
        match reader.fill().await {
            Ok(more) => eof = !more,
            Err(e) => break format!("reading from the server failed: {e}"),
        }
    };
    tracing::debug!("client connection ends: {reason}");
    shared.close(reason);
}

/// Routes one incoming message to the request with its `seq`: a stream's
/// messages into `out`, undecoded, with their fields as `read` found them
/// (the frame is read here if `read` is `None`); a malformed one is routed
/// by a peek at its `seq` and ends its stream with the error there. A
/// request's first reply is decoded.
fn route(
    shared: &Shared,
    frame: &[u8],
    read: Option<Fields>,
    qlen: u64,
    limits: Limits,
    out: &mut Outbox,
) -> Result<(), WireError> {
    let read = match read {
        Some(fields) => Ok(fields),
        None => Fields::parse(frame, limits).map(|(fields, _)| fields),
    };
    let fields = match &read {
        Ok(fields) => *fields,
        Err(_) => Fields::peek(frame, limits)?.0,
    };
    let view = MsgView::new(frame, fields);
    let Some(seq) = view.seq() else {
        tracing::warn!("server message without seq: {}", raw::decode_field(frame));
        return Ok(());
    };
    let state = view.state();
    let mut st = shared.lock();
    let Some(route) = st.routes.get_mut(&seq) else {
        tracing::debug!(
            "message for no pending request: {}",
            raw::decode_field(frame)
        );
        return Ok(());
    };
    if let Route::Streaming(tx) = route {
        out.push(seq, tx, frame, read);
        if state == Some("end") {
            st.routes.remove(&seq);
        }
        return Ok(());
    }
    let msg = codec::decode_with(frame, limits)?;
    match state {
        Some("start") => {
            let (tx, rx) = mpsc::channel(stream_buffer(qlen));
            if let Route::Waiting(reply) = std::mem::replace(route, Route::Streaming(tx)) {
                if reply.send(Ok(First::Stream { start: msg, rx })).is_err() {
                    st.routes.remove(&seq);
                }
            }
        }
        // We never stream requests, so no ack is due to us.
        Some("ack") => {}
        _ => {
            if let Some(Route::Waiting(reply)) = st.routes.remove(&seq) {
                let _ = reply.send(Ok(First::Single(msg)));
            }
        }
    }
    Ok(())
}

/// A bare message connection for tests and tools: no greeting handling, no
/// routing, no flow control — the caller sees and sends every message.
pub struct RawConn {
    reader: MsgReader<ReadHalf>,
    writer: MsgWriter<WriteHalf>,
}

impl RawConn {
    /// Connects within [`DEFAULT_TIMEOUT`]. The greeting is the first message
    /// [`RawConn::recv`] returns.
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<RawConn, ClientError> {
        RawConn::connect_with(addr, None).await
    }

    /// Connects within [`DEFAULT_TIMEOUT`], with TLS if `tls` is given.
    pub async fn connect_with(
        addr: impl ToSocketAddrs,
        tls: Option<&Connector>,
    ) -> Result<RawConn, ClientError> {
        let stream = tokio::time::timeout(DEFAULT_TIMEOUT, open(addr, tls))
            .await
            .map_err(|_| ClientError::Timeout("connecting to the server"))??;
        let (r, w) = stream.into_split();
        Ok(RawConn {
            reader: MsgReader::new(r),
            writer: MsgWriter::new(w),
        })
    }

    /// Sends one message.
    pub async fn send(&mut self, msg: &Value) -> Result<(), ClientError> {
        Ok(self.writer.send(msg).await?)
    }

    /// Sends raw bytes (which need not be valid msgpack).
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.writer.write_raw(bytes);
        Ok(self.writer.flush().await?)
    }

    /// The next message; `Ok(None)` when the server closed the connection.
    pub async fn recv(&mut self) -> Result<Option<Value>, ClientError> {
        Ok(self.reader.next().await?)
    }

    /// Closes the sending direction; the server sees end of stream.
    pub async fn shutdown(&mut self) -> Result<(), ClientError> {
        Ok(self.writer.shutdown().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distkv_model::path;
    use std::future::Future;
    use std::net::SocketAddr;
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
    use tokio::net::TcpListener;

    type Reader = MsgReader<OwnedReadHalf>;
    type Writer = MsgWriter<OwnedWriteHalf>;

    /// Deadline for whole tests: a hang fails instead of blocking CI.
    async fn within<T>(fut: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .expect("test deadline")
    }

    /// A one-connection fake server running `f`.
    async fn fake_server<F, Fut, T>(f: F) -> (SocketAddr, JoinHandle<T>)
    where
        F: FnOnce(Reader, Writer) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send,
        T: Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let (r, w) = sock.into_split();
            f(MsgReader::new(r), MsgWriter::new(w)).await
        });
        (addr, task)
    }

    fn greeting(qlen: u64) -> Value {
        Value::map([
            ("seq", Value::Int(0)),
            (
                "version",
                Value::Array(vec![Value::Int(0), Value::Int(63), Value::Int(3)]),
            ),
            ("node", Value::str("n1")),
            ("tick", Value::Int(7)),
            ("tock", Value::Int(497)),
            ("qlen", Value::uint(qlen)),
        ])
    }

    fn int(v: &Value, key: &str) -> u64 {
        v.get(key).and_then(Value::as_u64).unwrap()
    }

    fn text<'a>(v: &'a Value, key: &str) -> &'a str {
        v.get(key).and_then(Value::as_str).unwrap()
    }

    /// Reads the hello and returns its qlen.
    async fn read_hello(r: &mut Reader) -> u64 {
        let hello = r.next().await.unwrap().unwrap();
        assert_eq!(int(&hello, "seq"), 0);
        int(&hello, "qlen")
    }

    #[tokio::test]
    async fn a_refusal_instead_of_a_greeting_says_why() {
        within(async {
            let why = "this node is not ready yet";
            let (addr, _server) = fake_server(move |_r, mut w| async move {
                w.send(&Value::map([
                    ("error", Value::str(why)),
                    ("tock", Value::Int(3)),
                ]))
                .await
                .unwrap();
            })
            .await;
            match Client::connect(addr, ConnectOptions::default()).await {
                Err(ClientError::Refused(t)) => assert_eq!(t, why),
                other => panic!("{:?}", other.map(|c| c.greeting().raw.clone())),
            }
        })
        .await;
    }

    #[tokio::test]
    async fn greeting_hello_and_single_requests() {
        within(async {
            let (addr, server) = fake_server(|mut r, mut w| async move {
                w.send(&greeting(10)).await.unwrap();
                let qlen = read_hello(&mut r).await;
                let get = r.next().await.unwrap().unwrap();
                assert_eq!(text(&get, "action"), "get_value");
                assert_eq!(get.get("path"), Some(&Value::Path(path!["a", "b"])));
                assert_eq!(int(&get, "nchain"), 0);
                let seq = int(&get, "seq");
                w.send(&Value::map([
                    ("seq", Value::uint(seq)),
                    ("value", Value::str("hello")),
                    ("tock", Value::Int(498)),
                ]))
                .await
                .unwrap();
                let set = r.next().await.unwrap().unwrap();
                assert_eq!(text(&set, "action"), "set_value");
                assert!(int(&set, "seq") > seq);
                assert_eq!(set.get("chain"), Some(&Value::Nil));
                w.send(&Value::map([
                    ("seq", set.get("seq").unwrap().clone()),
                    ("error", Value::str("Entry already exists at a.b")),
                ]))
                .await
                .unwrap();
                qlen
            })
            .await;
            let c = Client::connect(addr, ConnectOptions::default())
                .await
                .unwrap();
            let g = c.greeting();
            assert_eq!(g.node, "n1");
            assert_eq!((g.tick, g.tock, g.qlen), (Some(7), 497, 10));
            assert_eq!(g.version, vec![0, 63, 3]);
            assert!(g.auth.is_empty());
            assert_eq!(c.qlen(), 10);

            let reply = c.get_value(&path!["a", "b"], 0).await.unwrap();
            assert_eq!(text(&reply, "value"), "hello");
            let opts = UpdateOptions {
                chain: Some(Value::Nil),
                ..UpdateOptions::default()
            };
            match c.set_value(&path!["a", "b"], Value::Int(1), &opts).await {
                Err(ClientError::Server(t)) => assert_eq!(t, "Entry already exists at a.b"),
                other => panic!("{other:?}"),
            }
            assert_eq!(server.await.unwrap(), 10);
        })
        .await;
    }

    #[tokio::test]
    async fn hello_uses_the_smaller_qlen_or_none() {
        within(async {
            // The server offers less than wanted.
            let (addr, server) = fake_server(|mut r, mut w| async move {
                w.send(&greeting(6)).await.unwrap();
                read_hello(&mut r).await
            })
            .await;
            let c = Client::connect(addr, ConnectOptions::default())
                .await
                .unwrap();
            assert_eq!(c.qlen(), 6);
            assert_eq!(server.await.unwrap(), 6);

            // qlen 0 still says hello at once, before any request: it
            // completes the handshake (servers close silent connections).
            let (addr, server) = fake_server(|mut r, mut w| async move {
                w.send(&greeting(10)).await.unwrap();
                read_hello(&mut r).await
            })
            .await;
            let opts = ConnectOptions {
                qlen: 0,
                ..ConnectOptions::default()
            };
            let c = Client::connect(addr, opts).await.unwrap();
            assert_eq!(c.qlen(), 0);
            assert_eq!(server.await.unwrap(), 0);
        })
        .await;
    }

    #[tokio::test]
    async fn invalid_qlen_and_bad_greeting_are_rejected() {
        let opts = ConnectOptions {
            qlen: 2,
            ..ConnectOptions::default()
        };
        assert!(matches!(
            Client::connect("127.0.0.1:1", opts).await,
            Err(ClientError::InvalidOption(_))
        ));
        within(async {
            let (addr, _server) = fake_server(|_r, mut w| async move {
                w.send(&Value::map([("seq", Value::Int(3))])).await.unwrap();
            })
            .await;
            assert!(matches!(
                Client::connect(addr, ConnectOptions::default()).await,
                Err(ClientError::Protocol(_))
            ));
        })
        .await;
    }

    #[tokio::test]
    async fn missing_greeting_times_out() {
        within(async {
            let (tx, rx) = oneshot::channel::<()>();
            let (addr, _server) = fake_server(|r, w| async move {
                // Hold the connection open, silent, until the test ends.
                let _ = rx.await;
                drop((r, w));
            })
            .await;
            let opts = ConnectOptions {
                timeout: Duration::from_millis(100),
                ..ConnectOptions::default()
            };
            assert!(matches!(
                Client::connect(addr, opts).await,
                Err(ClientError::Timeout(_))
            ));
            drop(tx);
        })
        .await;
    }

    /// Streams start, 10 items, uptodate and end under a window of `qlen`,
    /// never exceeding it; returns every ack received.
    async fn windowed_stream(mut r: Reader, mut w: Writer) -> Vec<u64> {
        w.send(&greeting(4)).await.unwrap();
        let qlen = read_hello(&mut r).await;
        assert_eq!(qlen, 4);
        let req = r.next().await.unwrap().unwrap();
        assert_eq!(text(&req, "action"), "get_tree");
        let seq = int(&req, "seq");
        let mut msgs = vec![Value::map([("state", Value::str("start"))])];
        for i in 0..10i64 {
            // Shortened paths: item i is `x.<i>` below the request path.
            let (depth, p) = if i == 0 {
                (0, path!["x", i])
            } else {
                (1, path![i])
            };
            msgs.push(Value::map([
                ("path", Value::Path(p)),
                ("depth", Value::Int(depth)),
                ("value", Value::Int(i)),
            ]));
        }
        msgs.push(Value::map([("state", Value::str("uptodate"))]));
        msgs.push(Value::map([("state", Value::str("end"))]));

        let mut acks = Vec::new();
        let mut acked = 0;
        for (n, msg) in msgs.into_iter().enumerate() {
            let wseq = n as u64 + 1;
            // Stall while the window is full, as the server does.
            while wseq - 1 - acked >= qlen {
                let ack = r.next().await.unwrap().unwrap();
                assert_eq!(int(&ack, "seq"), seq);
                assert_eq!(text(&ack, "state"), "ack");
                acked = int(&ack, "ack");
                assert!(acked < wseq, "ack {acked} for unsent messages");
                acks.push(acked);
            }
            let Value::Map(mut m) = msg else {
                unreachable!()
            };
            m.push((Value::str("seq"), Value::uint(seq)));
            m.push((Value::str("wseq"), Value::uint(wseq)));
            w.send(&Value::Map(m)).await.unwrap();
        }
        // Collect the remaining acks until the client hangs up.
        while let Some(ack) = r.next().await.unwrap() {
            assert_eq!(text(&ack, "state"), "ack");
            acks.push(int(&ack, "ack"));
        }
        acks
    }

    #[tokio::test]
    async fn stream_under_flow_control_acks_and_delivers_everything() {
        within(async {
            let (addr, server) = fake_server(windowed_stream).await;
            let c = Client::connect(addr, ConnectOptions::default())
                .await
                .unwrap();
            assert_eq!(c.qlen(), 4);
            let mut s = c
                .get_tree(&path!["top"], &TreeOptions::default())
                .await
                .unwrap();
            let mut items = Vec::new();
            let mut uptodate = false;
            while let Some(item) = s.next().await.unwrap() {
                match item {
                    StreamItem::Data(v) => {
                        assert!(v.get("wseq").is_none());
                        assert!(v.get("depth").is_none());
                        items.push(v);
                    }
                    StreamItem::UpToDate(_) => uptodate = true,
                }
            }
            assert!(uptodate);
            assert_eq!(items.len(), 10);
            for (i, v) in items.iter().enumerate() {
                assert_eq!(int(v, "value"), i as u64);
                assert_eq!(v.get("path"), Some(&Value::Path(path!["x", i as i64])));
            }
            drop(s);
            drop(c);
            // Acks every 2 messages (qlen 4: more than 4 // 3 unacked), never the end.
            assert_eq!(server.await.unwrap(), vec![2, 4, 6, 8, 10, 12]);
        })
        .await;
    }

    #[tokio::test]
    async fn raw_reads_longen_and_ack_as_decoded_reads_do() {
        within(async {
            let (addr, server) = fake_server(windowed_stream).await;
            let c = Client::connect(addr, ConnectOptions::default())
                .await
                .unwrap();
            let mut s = c
                .get_tree(&path!["top"], &TreeOptions::default())
                .await
                .unwrap();
            let mut items = Vec::new();
            let mut uptodate = false;
            while let Some(item) = s.next_raw().await.unwrap() {
                match item {
                    RawItem::Data(e) => {
                        let p = e.path.expect("a longened path");
                        let value = raw::decode_field(e.msg.value().unwrap());
                        items.push((p.elements.to_vec(), p.kept, value));
                    }
                    RawItem::UpToDate(m) => {
                        assert_eq!(m.state(), Some("uptodate"));
                        uptodate = true;
                    }
                }
            }
            assert!(uptodate);
            assert_eq!(items.len(), 10);
            for (i, (p, kept, v)) in items.iter().enumerate() {
                assert_eq!(p, path!["x", i as i64].elements());
                assert_eq!(*kept, usize::from(i > 0));
                assert_eq!(*v, Value::Int(i as i64));
            }
            drop(s);
            drop(c);
            assert_eq!(server.await.unwrap(), vec![2, 4, 6, 8, 10, 12]);
        })
        .await;
    }

    #[tokio::test]
    async fn a_malformed_stream_message_ends_its_stream_with_a_clear_error() {
        within(async {
            let (addr, server) = fake_server(|mut r, mut w| async move {
                w.send(&greeting(0)).await.unwrap();
                read_hello(&mut r).await;
                let (mut streams, mut stops) = (Vec::new(), Vec::new());
                while let Ok(Some(req)) = r.next().await {
                    let seq = int(&req, "seq") as u8;
                    if text(&req, "action") == "stop" {
                        stops.push(int(&req, "task"));
                        continue;
                    }
                    streams.push(u64::from(seq));
                    w.send(&Value::map([
                        ("seq", Value::uint(seq.into())),
                        ("state", Value::str("start")),
                    ]))
                    .await
                    .unwrap();
                    // {seq, path: <ext 3 holding a string that is not UTF-8>}
                    w.write_raw(&[0x82, 0xa3, b's', b'e', b'q', seq]);
                    w.write_raw(&[0xa4, b'p', b'a', b't', b'h', 0xd5, 3, 0xa1, 0xff]);
                    w.flush().await.unwrap();
                }
                (streams, stops)
            })
            .await;
            let c = Client::connect(addr, ConnectOptions::default())
                .await
                .unwrap();
            let bad = |r: Result<(), ClientError>| match r {
                Err(ClientError::Wire(WireError::Malformed(DecodeError::Invalid(why)))) => {
                    assert!(why.contains("UTF-8"), "{why}")
                }
                other => panic!("{other:?}"),
            };
            // Read in place, and decoded.
            let mut s = c
                .get_tree(&path!["top"], &TreeOptions::default())
                .await
                .unwrap();
            bad(s.next_raw().await.map(drop));
            assert!(s.next_raw().await.unwrap().is_none());
            drop(s);
            let mut s = c
                .get_tree(&path!["top"], &TreeOptions::default())
                .await
                .unwrap();
            bad(s.next().await.map(drop));
            assert!(s.next().await.unwrap().is_none());
            drop(s);
            assert!(!c.is_closed());
            drop(c);
            // Each stream was stopped at the server.
            let (streams, stops) = server.await.unwrap();
            assert_eq!(streams.len(), 2);
            assert_eq!(stops, streams);
        })
        .await;
    }

    #[tokio::test]
    async fn stop_ends_a_stream_and_single_replies_stream_as_one_item() {
        within(async {
            let (addr, server) = fake_server(|mut r, mut w| async move {
                w.send(&greeting(0)).await.unwrap();
                assert_eq!(read_hello(&mut r).await, 0);
                let watch = r.next().await.unwrap().unwrap();
                assert_eq!(text(&watch, "action"), "watch");
                assert_eq!(watch.get("fetch"), Some(&Value::Bool(true)));
                let seq = watch.get("seq").unwrap().clone();
                let with = |k: &'static str, v: Value| Value::map([("seq", seq.clone()), (k, v)]);
                w.send(&with("state", Value::str("start"))).await.unwrap();
                w.send(&Value::map([
                    ("seq", seq.clone()),
                    ("path", Value::Path(path!["q"])),
                    ("depth", Value::Int(0)),
                ]))
                .await
                .unwrap();
                let stop = r.next().await.unwrap().unwrap();
                assert_eq!(text(&stop, "action"), "stop");
                assert_eq!(stop.get("task"), Some(&seq));
                w.write(&with("state", Value::str("end")));
                w.write(&Value::map([
                    ("seq", stop.get("seq").unwrap().clone()),
                    ("result", Value::Bool(true)),
                ]));
                w.flush().await.unwrap();
                // A single reply to a streaming call.
                let del = r.next().await.unwrap().unwrap();
                assert_eq!(text(&del, "action"), "delete_tree");
                w.send(&Value::map([
                    ("seq", del.get("seq").unwrap().clone()),
                    ("changed", Value::Int(3)),
                ]))
                .await
                .unwrap();
            })
            .await;
            let c = Client::connect(addr, ConnectOptions::default())
                .await
                .unwrap();
            assert_eq!(c.qlen(), 0);
            let opts = TreeOptions {
                fetch: true,
                ..TreeOptions::default()
            };
            let mut s = c.watch(&path!["w"], &opts).await.unwrap();
            let Some(StreamItem::Data(v)) = s.next().await.unwrap() else {
                panic!("no data")
            };
            // Watch paths are absolute.
            assert_eq!(v.get("path"), Some(&Value::Path(path!["w", "q"])));
            s.stop().unwrap();
            assert_eq!(s.next().await.unwrap(), None);
            assert_eq!(s.next().await.unwrap(), None);

            let mut one = c
                .stream("delete_tree", vec![("path", Value::Path(path!["w"]))])
                .await
                .unwrap();
            let Some(StreamItem::Data(v)) = one.next().await.unwrap() else {
                panic!("no reply")
            };
            assert_eq!(int(&v, "changed"), 3);
            assert_eq!(one.next().await.unwrap(), None);
            server.await.unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn concurrent_requests_get_their_own_replies() {
        const N: usize = 20;
        within(async {
            let (addr, server) = fake_server(|mut r, mut w| async move {
                w.send(&greeting(10)).await.unwrap();
                read_hello(&mut r).await;
                let mut reqs = Vec::new();
                while reqs.len() < N {
                    reqs.push(r.next().await.unwrap().unwrap());
                }
                let seqs: Vec<u64> = reqs.iter().map(|m| int(m, "seq")).collect();
                let mut sorted = seqs.clone();
                sorted.sort();
                assert_eq!(seqs, sorted, "seqs go out in increasing order");
                // Answer in reverse order, in one batch.
                for req in reqs.iter().rev() {
                    w.write(&Value::map([
                        ("seq", req.get("seq").unwrap().clone()),
                        ("echo", req.get("path").unwrap().clone()),
                    ]));
                }
                w.flush().await.unwrap();
            })
            .await;
            let c = Client::connect(addr, ConnectOptions::default())
                .await
                .unwrap();
            let tasks: Vec<_> = (0..N as i64)
                .map(|i| {
                    let c = c.clone();
                    tokio::spawn(async move { (i, c.get_value(&path![i], 0).await) })
                })
                .collect();
            for t in tasks {
                let (i, reply) = t.await.unwrap();
                assert_eq!(reply.unwrap().get("echo"), Some(&Value::Path(path![i])));
            }
            server.await.unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn connection_drop_fails_pending_and_later_requests() {
        within(async {
            let (addr, server) = fake_server(|mut r, mut w| async move {
                w.send(&greeting(10)).await.unwrap();
                read_hello(&mut r).await;
                let watch = r.next().await.unwrap().unwrap();
                w.send(&Value::map([
                    ("seq", watch.get("seq").unwrap().clone()),
                    ("state", Value::str("start")),
                    ("wseq", Value::Int(1)),
                ]))
                .await
                .unwrap();
                let get = r.next().await.unwrap().unwrap();
                assert_eq!(text(&get, "action"), "get_value");
                // Hang up with both requests pending.
            })
            .await;
            let c = Client::connect(addr, ConnectOptions::default())
                .await
                .unwrap();
            let mut s = c.watch(&path!["w"], &TreeOptions::default()).await.unwrap();
            let pending = c.get_value(&path!["a"], 0).await;
            assert!(
                matches!(pending, Err(ClientError::Closed(_))),
                "{pending:?}"
            );
            assert!(matches!(s.next().await, Err(ClientError::Closed(_))));
            assert!(c.is_closed());
            assert!(matches!(c.get_tock().await, Err(ClientError::Closed(_))));
            server.await.unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn raw_conn_sends_and_receives_anything() {
        within(async {
            let (addr, server) = fake_server(|mut r, mut w| async move {
                w.send(&greeting(10)).await.unwrap();
                let m = r.next().await.unwrap().unwrap();
                let bad = r.next().await;
                (m, matches!(bad, Err(WireError::Malformed(_))))
            })
            .await;
            let mut raw = RawConn::connect(addr).await.unwrap();
            let g = raw.recv().await.unwrap().unwrap();
            assert_eq!(text(&g, "node"), "n1");
            raw.send(&Value::map([("seq", Value::Int(1))]))
                .await
                .unwrap();
            raw.send_bytes(&[0xc1]).await.unwrap();
            raw.shutdown().await.unwrap();
            let (m, bad) = server.await.unwrap();
            assert_eq!(int(&m, "seq"), 1);
            assert!(bad);
            assert_eq!(raw.recv().await.unwrap(), None);
        })
        .await;
    }

    #[test]
    fn path_longener_rebuilds_shortened_paths() {
        let mut l = PathLongener::new(&path!["a", "b"]);
        let mut out = Vec::new();
        for (depth, p) in [
            (0, path![]),
            (0, path!["c", "d"]),
            (1, path!["e", "f"]),
            (2, path!["g", "h"]),
            (1, path!["i"]),
            (0, path!["j"]),
            (9, path!["k"]),
        ] {
            let mut m = Value::map([("path", Value::Path(p)), ("depth", Value::Int(depth))]);
            l.apply(&mut m);
            assert!(m.get("depth").is_none());
            out.push(m.get("path").unwrap().clone());
        }
        let want = [
            path!["a", "b"],
            path!["a", "b", "c", "d"],
            path!["a", "b", "c", "e", "f"],
            path!["a", "b", "c", "e", "g", "h"],
            path!["a", "b", "c", "i"],
            path!["a", "b", "j"],
            path!["a", "b", "j", "k"],
        ];
        assert_eq!(out, want.map(Value::Path));
        // No depth: left alone.
        let mut m = Value::map([("path", Value::Path(path!["z"]))]);
        l.apply(&mut m);
        assert_eq!(m.get("path"), Some(&Value::Path(path!["z"])));
    }
}
