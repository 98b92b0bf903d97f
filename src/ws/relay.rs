//! One WebSocket connection after admission: chat lines both ways between WebSocket messages and
//! the session's end of a socket pair, plus the keepalive, until both sides are done (or an
//! upgrade takes the connection to another process: see `handover`).
//!
//! This is the relay's task: it waits on the connection, the session's end of the pair, the
//! clocks and an upgrade's freeze, and after each event lets [`Relay`] (in [`translate`]) do all
//! that can be done without waiting, turning the client's messages into lines for the session
//! and the session's lines into messages.
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

mod translate;

use std::io;
use std::net::SocketAddr;
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
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

use super::frames::Inbound;
use super::handover::{Registered, WsState};
use crate::client::{ClientId, LeaveReason};
use crate::hub::Hub;
use translate::Relay;

/// How long a relay may go on delivering after its session ended (as a session lingers after its
/// last write), and how long a close handshake is waited for.
const LINGER: Duration = Duration::from_secs(2);
/// Bytes of the session's output read at once; more is read only while less than this is owed
/// to the client.
const READ_CHUNK: usize = 16 * 1024;
/// The read buffer tungstenite allocates up front for each connection: chat messages are short,
/// and a larger one would cost every idle browser (its default is 128 KiB).
const READ_BUFFER: usize = 4096;

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
