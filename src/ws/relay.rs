//! One WebSocket connection after admission: chat lines both ways between WebSocket messages and
//! the session's end of a socket pair, plus the keepalive, until both sides are done (or an
//! upgrade takes the connection to another process: see `handover`).
//!
//! - To the client: what the session writes is split at its CRLFs, and each line goes out as one
//!   text message without them (a wrapped line's continuation rows are lines of their own, as on
//!   a terminal). When the session shuts its end after its last line, a close (1000) follows.
//! - From the client: each text message is one line; it goes to the session with an LF, as if
//!   typed into netcat, and the session frames, limits, sanitises and throttles it like any
//!   other. One trailing line break is tolerated (some tools send one); a message with a line
//!   break inside, or a binary message, is refused with a `***` line to its sender and not sent.
//!   A message over the WebSocket's own limit (see [`super::message_limit`]) is not read: the
//!   client is told and closed with 1009.
//!
//! The protocol is tungstenite's `WebSocketContext`, driven without I/O of its own: client bytes
//! wait in [`Inbound`] and are given to it one whole frame at a time, and the frames it writes go
//! to an owed-bytes buffer that this task writes to the socket. So at every await point the
//! relay's whole state is in four plain buffers, which is what an upgrade moves.
//!
//! Back-pressure is kept both ways, as in the TLS relay: the session's output is read only while
//! little is owed to the client (so a browser that stops reading stops the relay, the pair fills,
//! and the session's queue fills until the slow-consumer rule cuts it off); and the client's next
//! message is taken only once the previous one was handed to the session, and only while what is
//! owed to the client is bounded (so flood control, or a client that does not read its answers,
//! slows the client down through TCP).
//!
//! Keepalive: a ping every `ping_every` while the connection lasts; a client from which nothing at
//! all (message, ping, pong) has come for two of those is taken for gone and closed (`left (no
//! answer to pings)`). Time the relay spent waiting on the session to take a message does not
//! count against the client, nor does time frozen by an upgrade.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::debug;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Message, Utf8Bytes};

use super::frames::Inbound;
use super::handover::{Given, Registered, WsState};
use crate::client::{ClientId, LeaveReason};
use crate::hub::Hub;

/// How long a relay may go on delivering after its session ended (as a session lingers after its
/// last write), and how long a close handshake is waited for.
const LINGER: Duration = Duration::from_secs(2);
/// Bytes of the session's output read at once; more is read only while less than this is owed
/// to the client.
const READ_CHUNK: usize = 16 * 1024;
/// The client's messages are taken only while less than this is owed to it (its notices, the
/// answers to its pings): one that does not read is not read either.
const OWED_LIMIT: usize = 2 * READ_CHUNK;
/// A row of output longer than this without a CRLF goes out as a message of its own. The session
/// never writes one (its lines are the sanitised input of at most `max_line_bytes` with a prefix,
/// or its own short notices); this only bounds what the relay holds.
const MAX_ROW: usize = 4 << 20;
/// The read buffer tungstenite allocates up front for each connection: chat messages are short,
/// and a larger one would cost every idle browser (its default is 128 KiB).
const READ_BUFFER: usize = 4096;

/// Told to a sender of a binary message.
pub(super) const BINARY: &str =
    "*** Binary messages are not accepted: send text, one line per message.";
/// Told to a sender of a message with a line break inside.
pub(super) const LINE_BREAK: &str =
    "*** One line per message: this one had a line break in it; it was not sent.";

/// A WebSocket's connection: the TCP connection itself (over plain HTTP, which an upgrade can
/// move), or whatever hyper upgraded (TLS over HTTPS, which cannot move).
pub(super) enum Io {
    Tcp(TcpStream),
    Upgraded(TokioIo<Upgraded>),
}

impl Io {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self {
            Io::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Io::Upgraded(s) => Pin::new(s).poll_read(cx, buf),
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self {
            Io::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Io::Upgraded(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
}

/// What happened on the connection.
enum Event {
    Read(usize),
    Wrote(usize),
}

/// Reads into `inbound` (if `read`) or writes from `owed` (if not empty), whichever is ready
/// first: one future for both, as both need the connection.
async fn io_step(io: &mut Io, read: bool, inbound: &mut Inbound, owed: &[u8]) -> io::Result<Event> {
    let mut chunk = [0u8; READ_BUFFER];
    std::future::poll_fn(|cx| {
        if !owed.is_empty()
            && let Poll::Ready(r) = io.poll_write(cx, owed)
        {
            return Poll::Ready(r.map(Event::Wrote));
        }
        if read {
            let mut buf = ReadBuf::new(&mut chunk);
            if let Poll::Ready(r) = io.poll_read(cx, &mut buf) {
                let got = buf.filled();
                inbound.buf().extend_from_slice(got);
                return Poll::Ready(r.map(|()| Event::Read(got.len())));
            }
        }
        Poll::Pending
    })
    .await
}

/// tungstenite's view of the connection: whole frames from [`Inbound`] in, frames out to what is
/// owed. Never blocks on writing; reading says WouldBlock until a whole frame is here.
struct Wire<'a> {
    inbound: &'a mut Inbound,
    owed: &'a mut BytesMut,
    max_frame: usize,
}

impl Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inbound.release(buf, self.max_frame)
    }
}

impl Write for Wire<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.owed.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An admitted connection whose session runs already.
pub(super) struct Admitted {
    pub(super) id: ClientId,
    pub(super) peer: SocketAddr,
    pub(super) io: Io,
    /// The relay's end of the pair; the session has the other.
    pub(super) pipe: UnixStream,
    /// Where it starts from: nothing but what hyper read past the request for a new connection,
    /// the predecessor's state for one taken over.
    pub(super) state: WsState,
    /// The largest message accepted, for telling a client that sent a larger one.
    pub(super) message_limit: usize,
    pub(super) ping_every: Duration,
    /// Its entry in the registry: its session's end, and an upgrade's freeze request.
    pub(super) registered: Registered,
}

/// The protocol and the four buffers: everything the relay holds.
struct Relay {
    ws: WebSocketContext,
    inbound: Inbound,
    /// Frames for the client, not yet written.
    owed: BytesMut,
    /// The rest of a line for the session, not yet written to the pair.
    to_session: Bytes,
    /// Session output read but not yet a whole line.
    row: BytesMut,
    limit: usize,
    /// When something last came from the client.
    heard: Instant,
    /// The client will send nothing more (it closed, or it is being closed).
    input_done: bool,
    /// Nothing more goes to the client but what is owed (a close is among it, if one could go).
    output_done: bool,
    /// The session's end of the pair was read to its end.
    pipe_eof: bool,
    /// Writing to the session failed: it has gone, and later lines are dropped.
    session_gone: bool,
}

impl Relay {
    fn new(state: WsState, limit: usize) -> Relay {
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(0)
            .max_message_size(Some(limit))
            .max_frame_size(Some(limit));
        Relay {
            ws: WebSocketContext::new(Role::Server, Some(config)),
            inbound: Inbound::with(&state.inbound),
            owed: BytesMut::from(&state.to_client[..]),
            to_session: Bytes::from(state.to_session),
            row: BytesMut::from(&state.row[..]),
            limit,
            heard: Instant::now(),
            input_done: false,
            output_done: false,
            pipe_eof: false,
            session_gone: false,
        }
    }

    fn wire(&mut self) -> (&mut WebSocketContext, Wire<'_>) {
        (
            &mut self.ws,
            Wire {
                inbound: &mut self.inbound,
                owed: &mut self.owed,
                max_frame: self.limit,
            },
        )
    }

    /// Queues a message for the client, if the connection still takes one.
    fn send(&mut self, message: Message) {
        if self.ws.can_write() {
            let (ws, mut wire) = self.wire();
            // Never fails while it can write: the wire takes everything.
            let _ = ws.write(&mut wire, message);
        }
    }

    /// Queues a close with `code`, after which nothing more goes out.
    fn close(&mut self, code: CloseCode, reason: &'static str) {
        if self.ws.can_write() {
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            };
            let (ws, mut wire) = self.wire();
            let _ = ws.close(&mut wire, Some(frame));
        }
        self.output_done = true;
    }

    /// Does everything that can be done without waiting: takes the client's messages (while the
    /// session takes them), turns the session's output into messages, and queues the frames.
    /// Err when the connection broke the protocol.
    fn step(&mut self, pipe: &UnixStream) -> io::Result<()> {
        while !self.input_done && self.to_session.is_empty() && self.owed.len() < OWED_LIMIT {
            let (ws, mut wire) = self.wire();
            match ws.read(&mut wire) {
                Ok(message) => {
                    self.heard = Instant::now();
                    self.take(message);
                }
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    self.end_input(pipe);
                }
                Err(tungstenite::Error::Capacity(_)) => {
                    let line = format!(
                        "*** Message too long (limit {} bytes); closing the connection.",
                        self.limit
                    );
                    self.send(Message::text(line));
                    self.close(CloseCode::Size, "message too big");
                    self.end_input(pipe);
                }
                Err(e) => return Err(io::Error::other(e)),
            }
        }
        // Every complete line as a message of its own.
        while let Some(end) = memchr::memmem::find(&self.row, b"\r\n") {
            let mut line = self.row.split_to(end + 2);
            line.truncate(end);
            self.send(Message::Text(text(line.freeze())));
        }
        if self.row.len() > MAX_ROW {
            let row = self.row.split().freeze();
            self.send(Message::Text(text(row)));
        }
        if self.pipe_eof && !self.output_done {
            self.close(CloseCode::Normal, "");
        }
        if self.row.is_empty() && self.row.capacity() > 0 {
            // An idle connection holds no buffer here.
            self.row = BytesMut::new();
        }
        let (ws, mut wire) = self.wire();
        match ws.flush(&mut wire) {
            // Closed: the last frames are owed already.
            Ok(())
            | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                Ok(())
            }
            Err(e) => Err(io::Error::other(e)),
        }
    }

    /// One message from the client.
    fn take(&mut self, message: Message) {
        match message {
            Message::Text(text) => match one_line(&text) {
                Some(one) if !self.session_gone => {
                    let mut line = BytesMut::with_capacity(one.len() + 1);
                    line.extend_from_slice(one.as_bytes());
                    line.extend_from_slice(b"\n");
                    self.to_session = line.freeze();
                }
                Some(_) => {}
                None => self.send(Message::text(LINE_BREAK)),
            },
            Message::Binary(_) => self.send(Message::text(BINARY)),
            // tungstenite answers pings and queues the answer to a close; after the client's
            // close nothing more can go to it.
            Message::Close(_) if !self.ws.can_write() => self.output_done = true,
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => {}
        }
    }

    /// End-of-file for the session, as when a TCP client closes.
    fn end_input(&mut self, pipe: &UnixStream) {
        if !self.input_done {
            self.input_done = true;
            let _ = nix::sys::socket::shutdown(pipe.as_raw_fd(), nix::sys::socket::Shutdown::Write);
        }
    }

    /// Everything owed was delivered and nothing more can come.
    fn finished(&self) -> bool {
        self.input_done && self.output_done && self.owed.is_empty()
    }

    /// Whether the client's next bytes are wanted now.
    fn wants_input(&self) -> bool {
        !self.input_done
            && !self.inbound.eof
            && self.to_session.is_empty()
            && self.owed.len() < OWED_LIMIT
            && !self.inbound.ready(self.limit)
    }

    /// The state to hand over, if the relay is between two steps of an ordinary conversation.
    fn give(&mut self, io: &Io, pipe: &UnixStream) -> Option<Given> {
        let Io::Tcp(tcp) = io else {
            return None;
        };
        if self.input_done || self.output_done || self.pipe_eof || !self.ws.can_write() {
            return None;
        }
        let inbound = self.inbound.take()?;
        Some(Given {
            pipe: pipe.as_raw_fd(),
            tcp: tcp.as_raw_fd(),
            state: WsState {
                inbound,
                to_client: self.owed.to_vec(),
                to_session: self.to_session.to_vec(),
                row: self.row.to_vec(),
            },
        })
    }
}

/// Relays until both sides are done. `relay` (for a connection that cannot move) counts this
/// relay for an upgrade's wait until everything the session wrote has been delivered; `relays`
/// gives one to a relay that cannot move when asked to.
pub(super) async fn serve(
    c: Admitted,
    hub: Arc<Hub>,
    mut relay: Option<TaskTrackerToken>,
    relays: TaskTracker,
) {
    let Admitted {
        id,
        peer,
        mut io,
        pipe,
        state,
        message_limit,
        ping_every,
        registered,
    } = c;
    let control = registered.control.clone();
    let mut r = Relay::new(state, message_limit);
    let mut pings = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let dead_after = ping_every * 2;
    let mut cut_off_at: Option<Instant> = None;
    let mut session_left = false;
    let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
    // Bounded: each round handles one event, and the cut-off ends the loop once either side is
    // done.
    let outcome = loop {
        if let Err(e) = r.step(&pipe) {
            break Err(e);
        }
        if r.finished() {
            break Ok(());
        }
        if r.output_done && r.owed.is_empty() {
            // An upgrade waiting for its notice to be delivered need not wait for more.
            relay = None;
        }
        if r.output_done || r.input_done {
            // The other side's end is not waited for forever.
            cut_off_at.get_or_insert_with(|| Instant::now() + LINGER);
        }
        let read = r.wants_input();
        let write = !r.owed.is_empty();
        let pipe_read = !r.output_done && !r.pipe_eof && r.owed.len() < READ_CHUNK;
        let pipe_write = !r.to_session.is_empty();
        tokio::select! {
            request = control.freeze_requested(), if cut_off_at.is_none() => {
                match r.give(&io, &pipe) {
                    Some(given) => {
                        request.give(id, given);
                        request.thawed().await;
                        // Rolled back: carry on as if nothing had happened meanwhile.
                        r.heard = Instant::now();
                        pings.reset();
                    }
                    None => {
                        relay.get_or_insert_with(|| relays.token());
                        request.cannot(id);
                    }
                }
            }
            event = io_step(&mut io, read, &mut r.inbound, &r.owed), if read || write => {
                match event {
                    Ok(Event::Read(0)) => r.inbound.eof = true,
                    Ok(Event::Read(n)) => bytes_in += n as u64,
                    Ok(Event::Wrote(n)) => {
                        r.owed.advance(n);
                        bytes_out += n as u64;
                        if r.owed.is_empty() {
                            r.owed = BytesMut::new();
                        }
                    }
                    Err(e) => break Err(e),
                }
            }
            ready = pipe.readable(), if pipe_read => {
                if let Err(e) = ready {
                    break Err(e);
                }
                r.row.reserve(READ_CHUNK);
                match pipe.try_read_buf(&mut r.row) {
                    Ok(0) => r.pipe_eof = true,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => break Err(e),
                }
            }
            ready = pipe.writable(), if pipe_write => {
                if ready.is_err() {
                    r.session_gone = true;
                    r.to_session = Bytes::new();
                    continue;
                }
                match pipe.try_write(&r.to_session) {
                    Ok(n) => r.to_session.advance(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // The session has gone: what the client sends from now on is dropped.
                    Err(_) => {
                        r.session_gone = true;
                        r.to_session = Bytes::new();
                    }
                }
                if r.to_session.is_empty() {
                    // The session took it: the client is heard from again only when it speaks.
                    r.heard = Instant::now();
                }
            }
            _ = pings.tick() => r.send(Message::Ping(Bytes::new())),
            () = control.session_left(), if !session_left => {
                session_left = true;
                cut_off_at.get_or_insert_with(|| Instant::now() + LINGER);
            }
            () = sleep_until(cut_off_at), if cut_off_at.is_some() => {
                break if r.output_done {
                    Err(io::Error::new(io::ErrorKind::TimedOut, "no answer to the close"))
                } else {
                    Err(io::Error::new(io::ErrorKind::TimedOut, "client not reading; cut off"))
                };
            }
            () = tokio::time::sleep_until(r.heard + dead_after), if cut_off_at.is_none() => {
                // Something may have come since this wait began; only silence counts, and a
                // message waiting for the session is not the client's silence.
                if !r.to_session.is_empty() {
                    r.heard = Instant::now();
                } else if r.heard + dead_after <= Instant::now() {
                    hub.close(id, LeaveReason::PingTimeout, None);
                    break Err(io::Error::new(io::ErrorKind::TimedOut, "no answer to pings"));
                }
            }
        }
    };
    drop(relay);
    if let Io::Tcp(tcp) = &mut io {
        let _ = tcp.shutdown().await;
    }
    match outcome {
        Ok(()) => debug!(
            client = id, peer = %peer, bytes_out, bytes_in, "WebSocket connection closed"
        ),
        Err(e) => debug!(client = id, peer = %peer, error = %e, "WebSocket connection ended"),
    }
}

/// Sleeps until `at` (a guard makes sure there is one).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The line a text message carries: the text without one trailing LF or CR LF; None if a line
/// break is left inside.
pub(super) fn one_line(text: &str) -> Option<&str> {
    let line = match text.strip_suffix('\n') {
        Some(rest) => rest.strip_suffix('\r').unwrap_or(rest),
        None => text,
    };
    (!line.contains(['\r', '\n'])).then_some(line)
}

/// A line of the session's output as text: it writes UTF-8 only (everything it relays is
/// sanitised), but a row cut at [`MAX_ROW`] could end inside a character.
fn text(bytes: Bytes) -> Utf8Bytes {
    match Utf8Bytes::try_from(bytes.clone()) {
        Ok(text) => text,
        Err(_) => String::from_utf8_lossy(&bytes).into_owned().into(),
    }
}

/// Tells a refused client why (`line`) and closes it with 1013 ("try again later"), all by
/// `deadline`, then reads until it closes (or the deadline), so that the close is a clean one.
pub(super) async fn refuse(
    mut io: Io,
    line: String,
    deadline: Instant,
    _permit: OwnedSemaphorePermit,
) {
    let mut r = Relay::new(WsState::default(), READ_BUFFER);
    r.send(Message::text(line));
    r.close(CloseCode::Again, "refused");
    let mut inbound = Inbound::default();
    let linger = deadline.min(Instant::now() + LINGER);
    // Bounded by the deadline: each round writes or reads something, or ends.
    loop {
        let limit = if r.owed.is_empty() { linger } else { deadline };
        let read = r.owed.is_empty();
        match tokio::time::timeout_at(limit, io_step(&mut io, read, &mut inbound, &r.owed)).await {
            Ok(Ok(Event::Wrote(n))) => r.owed.advance(n),
            Ok(Ok(Event::Read(n))) if n > 0 => {
                // What it says meanwhile (its answer to the close) is not read for meaning.
                let _ = inbound.buf().split();
            }
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn one_line_per_message() {
        assert_eq!(one_line("hello"), Some("hello"));
        assert_eq!(one_line(""), Some(""));
        assert_eq!(one_line("hello\n"), Some("hello"));
        assert_eq!(one_line("hello\r\n"), Some("hello"));
        assert_eq!(one_line("a\nb"), None);
        assert_eq!(one_line("a\rb"), None);
        assert_eq!(one_line("hello\n\n"), None);
        assert_eq!(one_line("hello\r"), None);
        assert_eq!(one_line("\n"), Some(""));
    }
}
