//! Framed msgpack over async byte streams: the transport layer of the client
//! protocol, shared by the server and the client.
//!
//! DistKV's stream has no framing: each direction is a bare concatenation of
//! msgpack values. [`MsgReader`] owns a reusable receive buffer and a
//! resumable [`FrameScanner`], so a message arriving in many pieces is
//! scanned once, and every limit ([`Limits`]: frame size, nesting depth) is
//! enforced before anything is built. [`MsgWriter`] encodes values into one
//! reusable buffer and writes them out on [`MsgWriter::flush`], so a batch of
//! replies costs one write.
//!
//! Invariants: the reader's buffered bytes always start at a message
//! boundary; once it reports an error it keeps reporting it, because without
//! framing a stream cannot be resynchronised — the owner must close the
//! connection after reporting the error. Nothing here panics on network
//! input.

use std::io;

use distkv_model::codec::{self, DecodeError, FrameScanner, Limits};
use distkv_model::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes asked of the transport per read when the peer is quiet: small, so
/// thousands of idle connections cost little memory.
const MIN_CHUNK: usize = 4 << 10;
/// Bytes asked per read at most; a read that fills its space doubles the
/// next one up to this.
const READ_CHUNK: usize = 64 << 10;
/// An idle buffer larger than this is shrunk back to [`MIN_CHUNK`].
const KEEP_BUFFER: usize = 4 * READ_CHUNK;

/// Why a message could not be read or written. Every variant means the
/// connection is unusable: report it and close the connection.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The transport failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the stream in the middle of a message.
    #[error("connection closed in the middle of a message")]
    Truncated,
    /// The peer sent bytes that are not an acceptable msgpack value
    /// (malformed, too large or too deeply nested).
    #[error("bad message: {0}")]
    Malformed(#[from] DecodeError),
    /// A well-formed message whose content is refused (an extension type
    /// DistKV's clients cannot read). It was skipped: the stream goes on.
    #[error("refused message: {error}")]
    Refused {
        /// The message's `seq`, if it has one.
        seq: Option<u64>,
        /// Why.
        error: DecodeError,
    },
}

/// A message as [`MsgReader::try_next_read`] hands it out.
#[derive(Debug)]
pub enum Next<'a, T> {
    /// The message's bytes, and what `read` made of them.
    Read(&'a [u8], T),
    /// The message, decoded: `read` refused it, or it came in pieces.
    Value(Value),
}

/// Decodes one frame (a message's bytes, as the reader's scanner found
/// them) under `limits`. A message holding an extension type DistKV's
/// clients cannot read is [`WireError::Refused`], with its `seq`.
pub fn decode_frame(frame: &[u8], limits: Limits) -> Result<Value, WireError> {
    match codec::decode_with(frame, limits) {
        Ok(v) => Ok(v),
        Err(error @ DecodeError::ForeignExt(_)) => {
            // The frame is sound, only its content is refused: it is
            // skipped, and the error says which request it was.
            let lenient = Limits {
                foreign_ext: true,
                ..limits
            };
            let seq = codec::decode_with(frame, lenient)
                .ok()
                .and_then(|v| v.get("seq").and_then(Value::as_u64));
            Err(WireError::Refused { seq, error })
        }
        Err(e) => Err(WireError::Malformed(e)),
    }
}

/// A frame, and what [`MsgReader::try_next_frame_with`]'s `read` made of
/// it (`None` where the scanner found it).
pub type FrameRead<'a, T> = (&'a [u8], Option<T>);

/// Reads complete msgpack values from an async byte stream.
///
/// Use [`MsgReader::next`] for one message at a time, or — to handle
/// pipelined requests in batches — await one message and then drain what is
/// already buffered without waiting:
///
/// ```ignore
/// while let Some(first) = reader.next().await? {
///     handle(first);
///     while let Some(more) = reader.try_next()? {
///         handle(more);
///     }
///     writer.flush().await?; // one write for the whole batch of replies
/// }
/// ```
#[derive(Debug)]
pub struct MsgReader<R> {
    inner: R,
    /// Received bytes live in `buf[start..end]`; `buf[end..]` is read space.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    scanner: FrameScanner,
    /// Whether the scanner holds a partial message (it resumes there).
    scanning: bool,
    limits: Limits,
    eof: bool,
    failed: Option<DecodeError>,
    /// Read space to offer next, between [`MIN_CHUNK`] and [`READ_CHUNK`].
    chunk: usize,
}

impl<R: AsyncRead + Unpin> MsgReader<R> {
    /// A reader with the default [`Limits`].
    pub fn new(inner: R) -> MsgReader<R> {
        MsgReader::with_limits(inner, Limits::default())
    }

    /// A reader enforcing `limits` on every message.
    pub fn with_limits(inner: R, limits: Limits) -> MsgReader<R> {
        MsgReader {
            inner,
            buf: Vec::new(),
            start: 0,
            end: 0,
            scanner: FrameScanner::new(limits),
            scanning: false,
            limits,
            eof: false,
            failed: None,
            chunk: MIN_CHUNK,
        }
    }

    /// The next message; `Ok(None)` when the peer closed the stream cleanly
    /// at a message boundary.
    pub async fn next(&mut self) -> Result<Option<Value>, WireError> {
        loop {
            if let Some(v) = self.try_next()? {
                return Ok(Some(v));
            }
            if !self.fill().await? {
                // `try_next` reports a partial message left at EOF.
                return self.try_next();
            }
        }
    }

    /// The next message if it is already completely buffered, without
    /// waiting. `Ok(None)` means more bytes are needed (or the stream ended
    /// cleanly); at end of stream a partial message is [`WireError::Truncated`].
    pub fn try_next(&mut self) -> Result<Option<Value>, WireError> {
        let limits = self.limits;
        let Some(frame) = self.try_next_frame()? else {
            return Ok(None);
        };
        match decode_frame(frame, limits) {
            Ok(v) => Ok(Some(v)),
            Err(WireError::Malformed(e)) => Err(self.fail(e)),
            Err(e) => Err(e),
        }
    }

    /// As [`MsgReader::try_next`], reading each message with `read` first
    /// as [`MsgReader::try_next_frame_with`] does: a message `read` took
    /// comes undecoded, with what `read` made of it; any other is decoded.
    pub fn try_next_read<T>(
        &mut self,
        read: impl FnOnce(&[u8]) -> Result<(T, usize), DecodeError>,
    ) -> Result<Option<Next<'_, T>>, WireError> {
        if let Some((at, n, t)) = self.read_ahead(read) {
            return Ok(Some(Next::Read(&self.buf[at..at + n], t)));
        }
        let limits = self.limits;
        let decoded = match self.try_next_frame()? {
            None => return Ok(None),
            Some(frame) => decode_frame(frame, limits),
        };
        match decoded {
            Ok(v) => Ok(Some(Next::Value(v))),
            Err(WireError::Malformed(e)) => Err(self.fail(e)),
            Err(e) => Err(e),
        }
    }

    /// The next message's bytes if it is already completely buffered,
    /// without waiting and without decoding it: its frame is sound (within
    /// the size and nesting limits), its content not yet checked. As
    /// [`MsgReader::try_next`] otherwise.
    pub fn try_next_frame(&mut self) -> Result<Option<&[u8]>, WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone().into());
        }
        let pending = &self.buf[self.start..self.end];
        if pending.is_empty() {
            return Ok(None);
        }
        match self.scanner.scan(pending) {
            Ok(Some(n)) => {
                let at = self.start;
                self.start += n;
                self.scanner.reset();
                self.scanning = false;
                Ok(Some(&self.buf[at..at + n]))
            }
            Ok(None) if self.eof => Err(WireError::Truncated),
            Ok(None) => {
                self.scanning = true;
                Ok(None)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// As [`MsgReader::try_next_frame`], reading each message with `read`
    /// as it is found, so that a reader which walks the whole message
    /// anyway also finds its end: `read` gets the buffered bytes, which
    /// start with the message, and returns what it makes of it and its
    /// length. Where it reads a whole message within the size limit, that
    /// is the frame, with `read`'s result; where it fails (the message is
    /// not all there yet, or `read` refuses its content), the scanner
    /// finds the frame, which comes with `None`. `read` is tried once per
    /// message, before any part of it was scanned: a message arriving in
    /// many pieces is still scanned once. `read` must accept only whole
    /// msgpack values within the nesting limit (it may refuse more).
    pub fn try_next_frame_with<T>(
        &mut self,
        read: impl FnOnce(&[u8]) -> Result<(T, usize), DecodeError>,
    ) -> Result<Option<FrameRead<'_, T>>, WireError> {
        if let Some((at, n, t)) = self.read_ahead(read) {
            return Ok(Some((&self.buf[at..at + n], Some(t))));
        }
        Ok(self.try_next_frame()?.map(|frame| (frame, None)))
    }

    /// Tries `read` on the next message (see
    /// [`MsgReader::try_next_frame_with`]): where it takes a whole
    /// message within the size limit, consumes it and returns where it
    /// lies in the buffer, and `read`'s result.
    fn read_ahead<T>(
        &mut self,
        read: impl FnOnce(&[u8]) -> Result<(T, usize), DecodeError>,
    ) -> Option<(usize, usize, T)> {
        if self.failed.is_some() || self.scanning || self.start >= self.end {
            return None;
        }
        let (t, n) = read(&self.buf[self.start..self.end]).ok()?;
        if n == 0 || n > self.limits.max_frame || n > self.end - self.start {
            return None;
        }
        let at = self.start;
        self.start += n;
        Some((at, n, t))
    }

    /// The limits this reader enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Reads once from the transport into the buffer. Returns `false` at end
    /// of stream (then drain with [`MsgReader::try_next`]).
    pub async fn fill(&mut self) -> Result<bool, WireError> {
        if self.eof {
            return Ok(false);
        }
        self.make_room();
        let space = self.buf.len() - self.end;
        let n = self.inner.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            self.eof = true;
            return Ok(false);
        }
        self.end += n;
        if n == space {
            self.chunk = (self.chunk * 2).min(READ_CHUNK);
        }
        Ok(true)
    }

    /// Bytes received but not yet returned as messages.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The underlying transport.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Ensures at least `chunk` bytes of read space after `end`.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.chunk = MIN_CHUNK;
            if self.buf.len() > KEEP_BUFFER {
                self.buf.truncate(MIN_CHUNK);
                self.buf.shrink_to_fit();
            }
        }
        if self.buf.len() - self.end >= self.chunk {
            return;
        }
        if self.start > 0 {
            // Moves at most one partial message; the scanner's position is
            // relative to the message start, so it stays valid.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < self.chunk {
            self.buf.resize(self.end + self.chunk, 0);
        }
    }

    fn fail(&mut self, e: DecodeError) -> WireError {
        self.failed = Some(e.clone());
        WireError::Malformed(e)
    }
}

/// Buffers encoded msgpack values and writes them to an async byte stream.
#[derive(Debug)]
pub struct MsgWriter<W> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> MsgWriter<W> {
    /// A writer with an empty buffer.
    pub fn new(inner: W) -> MsgWriter<W> {
        MsgWriter {
            inner,
            buf: Vec::new(),
        }
    }

    /// Encodes `v` into the buffer; nothing is sent until [`MsgWriter::flush`].
    pub fn write(&mut self, v: &Value) {
        codec::encode(v, &mut self.buf);
    }

    /// Appends raw bytes to the buffer (for tests that send broken input).
    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet written.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Writes out everything buffered and flushes the transport.
    pub async fn flush(&mut self) -> Result<(), WireError> {
        if !self.buf.is_empty() {
            self.inner.write_all(&self.buf).await?;
            self.buf.clear();
            if self.buf.capacity() > KEEP_BUFFER {
                self.buf.shrink_to(READ_CHUNK);
            }
        }
        self.inner.flush().await?;
        Ok(())
    }

    /// Encodes `v` and flushes at once.
    pub async fn send(&mut self, v: &Value) -> Result<(), WireError> {
        self.write(v);
        self.flush().await
    }

    /// Flushes, then shuts the transport's write side down (TCP FIN).
    pub async fn shutdown(&mut self) -> Result<(), WireError> {
        self.flush().await?;
        self.inner.shutdown().await?;
        Ok(())
    }

    /// The underlying transport.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distkv_model::path;
    use tokio::io::duplex;

    fn msgs() -> Vec<Value> {
        (0..6)
            .map(|i| {
                Value::map([
                    ("seq", Value::Int(i)),
                    ("action", Value::str("set_value")),
                    ("path", Value::Path(path!["a", i, "long element"])),
                    ("value", Value::Bin(vec![i as u8; 300].as_slice().into())),
                ])
            })
            .collect()
    }

    #[tokio::test]
    async fn pipelined_messages_split_at_every_byte_boundary() {
        let msgs = msgs();
        let mut bytes = Vec::new();
        for m in &msgs {
            codec::encode(m, &mut bytes);
        }
        let len = |got: &[Value]| got.iter().map(|m| codec::to_vec(m).len()).sum::<usize>();
        for split in 0..=bytes.len() {
            let (mut a, b) = duplex(bytes.len() + 1);
            let mut r = MsgReader::new(b);
            a.write_all(&bytes[..split]).await.unwrap();
            let mut got = Vec::new();
            while let Some(v) = r.try_next().unwrap() {
                got.push(v);
            }
            // Everything complete in the first piece is available without waiting.
            while len(&got) + r.buffered() < split {
                assert!(r.fill().await.unwrap());
                while let Some(v) = r.try_next().unwrap() {
                    got.push(v);
                }
            }
            a.write_all(&bytes[split..]).await.unwrap();
            drop(a);
            while let Some(v) = r.next().await.unwrap() {
                got.push(v);
            }
            assert_eq!(got, msgs, "split at {split}");
        }
    }

    /// Frames read from `pieces` (written and read one at a time), each
    /// with the fields `try_next_frame_with` read in it (`None` where the
    /// scanner found it, or when read by `try_next_frame`), and the error
    /// that ended the reading, if one did.
    async fn frames_of(
        pieces: &[&[u8]],
        with_fields: bool,
    ) -> (Vec<(Vec<u8>, Option<String>)>, Option<String>) {
        let limits = Limits {
            max_frame: 2000,
            ..Limits::default()
        };
        let (mut a, b) = duplex(1 << 16);
        let mut r = MsgReader::with_limits(b, limits);
        let mut got = Vec::new();
        let mut drain = |r: &mut MsgReader<_>| loop {
            let next = if with_fields {
                r.try_next_frame_with(|b| crate::raw::Fields::parse(b, limits))
                    .map(|f| f.map(|(f, t)| (f.to_vec(), t.map(|t| format!("{t:?}")))))
            } else {
                r.try_next_frame().map(|f| f.map(|f| (f.to_vec(), None)))
            };
            match next {
                Ok(Some(x)) => got.push(x),
                Ok(None) => return None,
                Err(e) => return Some(e.to_string()),
            }
        };
        for piece in pieces {
            a.write_all(piece).await.unwrap();
            assert!(r.fill().await.unwrap());
            if let Some(e) = drain(&mut r) {
                return (got, Some(e));
            }
        }
        drop(a);
        assert!(!r.fill().await.unwrap());
        let end = drain(&mut r);
        (got, end)
    }

    /// Reading each message's fields as its frame is found cuts the same
    /// frames as the scanner alone, with the same errors, on streams of
    /// messages with a byte changed (bad UTF-8, foreign extensions, wrong
    /// lengths, reserved bytes) cut into random pieces; where it read the
    /// fields, they are what `Fields::parse` reads in the frame.
    #[tokio::test]
    async fn frames_read_with_their_fields_are_the_scanned_frames() {
        let mut rng = crate::raw::tests::Rng(0x5eed_f4a3);
        let mut below = |n: usize| rng.below(n as u64) as usize;
        let mut msgs = msgs();
        for i in 0..20 {
            msgs.push(Value::map([
                ("seq", Value::Int(7)),
                ("path", Value::Path(path![i, "é"])),
                ("depth", Value::Int(1)),
                ("value", Value::str(&"x".repeat(i as usize * 3))),
                ("wseq", Value::Int(i)),
            ]));
        }
        let (mut read_here, mut scanned, mut refused, mut errors) = (0, 0, 0, 0);
        for case in 0..300 {
            let mut bytes = Vec::new();
            for _ in 0..1 + below(8) {
                codec::encode(&msgs[below(msgs.len())], &mut bytes);
            }
            if case % 3 != 0 {
                let at = below(bytes.len());
                bytes[at] = below(256) as u8;
            }
            let mut pieces = Vec::new();
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let (piece, more) = rest.split_at(1 + below(rest.len().min(400)));
                pieces.push(piece);
                rest = more;
            }
            let (want, want_end) = frames_of(&pieces, false).await;
            let (got, got_end) = frames_of(&pieces, true).await;
            assert_eq!(got_end, want_end, "case {case}");
            errors += want_end.is_some() as usize;
            assert_eq!(got.len(), want.len(), "case {case}");
            for ((frame, fields), (want, _)) in got.iter().zip(&want) {
                assert_eq!(frame, want, "case {case}");
                let parsed = crate::raw::Fields::parse(frame, Limits::default());
                match fields {
                    Some(f) => {
                        read_here += 1;
                        assert_eq!(Some(f), parsed.map(|(p, _)| format!("{p:?}")).ok().as_ref());
                    }
                    None => {
                        scanned += 1;
                        refused += parsed.is_err() as usize;
                    }
                }
            }
        }
        // Each road was taken: fields read, frames scanned (cut across
        // pieces, or refused by the checked read), streams ending in error.
        let counts = [read_here, scanned, refused, errors];
        assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
    }

    #[tokio::test]
    async fn byte_by_byte_writes_and_writer_round_trip() {
        let msgs = msgs();
        let (a, b) = duplex(1);
        let writer = tokio::spawn({
            let msgs = msgs.clone();
            async move {
                let mut w = MsgWriter::new(a);
                for m in &msgs {
                    w.write(m);
                }
                w.shutdown().await.unwrap();
            }
        });
        let mut r = MsgReader::new(b);
        let mut got = Vec::new();
        while let Some(v) = r.next().await.unwrap() {
            got.push(v);
        }
        writer.await.unwrap();
        assert_eq!(got, msgs);
    }

    #[tokio::test]
    async fn oversize_frame_is_rejected() {
        let limits = Limits {
            max_frame: 1000,
            max_depth: 8,
            ..Limits::default()
        };
        let big = Value::map([("value", Value::str(&"x".repeat(5000)))]);
        let (mut a, b) = duplex(1 << 16);
        a.write_all(&codec::to_vec(&big)).await.unwrap();
        let mut r = MsgReader::with_limits(b, limits);
        assert!(matches!(
            r.next().await,
            Err(WireError::Malformed(DecodeError::TooLarge { .. }))
        ));
        // The error sticks: the stream cannot be resynchronised.
        assert!(matches!(r.try_next(), Err(WireError::Malformed(_))));
    }

    #[tokio::test]
    async fn oversize_frame_without_announced_length_is_rejected() {
        // A huge map of small items: no single header announces the size.
        let limits = Limits {
            max_frame: 1000,
            max_depth: 8,
            ..Limits::default()
        };
        let (mut a, b) = duplex(1 << 16);
        let mut bytes = vec![0xdf, 0, 1, 0, 0];
        bytes.extend_from_slice(&[0x01; 2000]);
        a.write_all(&bytes).await.unwrap();
        let mut r = MsgReader::with_limits(b, limits);
        assert!(matches!(
            r.next().await,
            Err(WireError::Malformed(DecodeError::TooLarge { .. }))
        ));
    }

    #[tokio::test]
    async fn deep_nesting_is_rejected() {
        let (mut a, b) = duplex(1024);
        a.write_all(&[0x91; 100]).await.unwrap();
        let mut r = MsgReader::new(b);
        assert!(matches!(
            r.next().await,
            Err(WireError::Malformed(DecodeError::TooDeep(64)))
        ));
    }

    #[tokio::test]
    async fn garbage_bytes_are_rejected() {
        for garbage in [
            &[0xc1u8][..],
            &[0xa2, 0xc3, 0x28],
            &[0x81, 0xa1, b'a', 0xc1],
        ] {
            let (mut a, b) = duplex(1024);
            a.write_all(garbage).await.unwrap();
            drop(a);
            let mut r = MsgReader::new(b);
            assert!(
                matches!(r.next().await, Err(WireError::Malformed(_))),
                "{garbage:?}"
            );
        }
    }

    #[tokio::test]
    async fn eof_mid_message_is_truncated_and_clean_eof_is_none() {
        let bytes = codec::to_vec(&msgs()[0]);
        let (mut a, b) = duplex(1 << 16);
        a.write_all(&bytes).await.unwrap();
        a.write_all(&bytes[..bytes.len() / 2]).await.unwrap();
        drop(a);
        let mut r = MsgReader::new(b);
        assert!(r.next().await.unwrap().is_some());
        assert!(matches!(r.next().await, Err(WireError::Truncated)));

        let (a, b) = duplex(16);
        drop(a);
        let mut r = MsgReader::new(b);
        assert!(r.next().await.unwrap().is_none());
        assert!(r.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn large_frames_grow_and_shrink_the_buffer() {
        let big = Value::map([("value", Value::Bin(vec![7u8; 1 << 20].as_slice().into()))]);
        let small = Value::map([("seq", Value::Int(1))]);
        let (a, b) = duplex(1 << 16);
        let writer = tokio::spawn({
            let (big, small) = (big.clone(), small.clone());
            async move {
                let mut w = MsgWriter::new(a);
                w.write(&big);
                w.write(&small);
                w.shutdown().await.unwrap();
            }
        });
        let mut r = MsgReader::new(b);
        assert_eq!(r.next().await.unwrap(), Some(big));
        assert_eq!(r.next().await.unwrap(), Some(small));
        assert_eq!(r.next().await.unwrap(), None);
        assert!(r.buf.len() <= KEEP_BUFFER);
        writer.await.unwrap();
    }
}
