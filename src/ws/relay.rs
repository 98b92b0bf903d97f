//! One WebSocket connection after admission: chat lines both ways between WebSocket messages and
//! the session's end of a socket pair, plus the keepalive, until both sides are done.
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
//! Back-pressure is kept both ways, as in the TLS relay: the session's output is read only once
//! the previous read went out (a message is written, then flushed, before the next read), so a
//! browser that stops reading stops the relay, the pair fills, and the session's queue fills
//! until the slow-consumer rule cuts it off; and a client's message is read only once the
//! previous one was handed to the session, so flood control slows the browser down through TCP.
//!
//! Keepalive: a ping every `ping_every` while the connection lasts; a client from which nothing at
//! all (message, ping, pong) has come for two of those is taken for gone and closed (`left (no
//! answer to pings)`). Time the relay spent waiting on the session to take a message does not
//! count against the client.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::net::unix::{ReadHalf, WriteHalf};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::debug;

use crate::client::{ClientId, LeaveReason};
use crate::hub::Hub;

/// How long a relay may go on delivering after its session ended (as a session lingers after its
/// last write), and how long a close handshake is waited for.
const LINGER: Duration = Duration::from_secs(2);
/// Bytes of the session's output read at once: the most that waits in the relay, and what one
/// flush writes at most (plus frame headers).
const READ_CHUNK: usize = 16 * 1024;
/// A row of output longer than this without a CRLF goes out as a message of its own. The session
/// never writes one (its lines are the sanitised input of at most `max_line_bytes` with a prefix,
/// or its own short notices); this only bounds what the relay holds.
const MAX_ROW: usize = 4 << 20;

/// Told to a sender of a binary message.
pub(super) const BINARY: &str =
    "*** Binary messages are not accepted: send text, one line per message.";
/// Told to a sender of a message with a line break inside.
pub(super) const LINE_BREAK: &str =
    "*** One line per message: this one had a line break in it; it was not sent.";

/// An admitted connection whose session runs already.
pub(super) struct Admitted {
    pub(super) id: ClientId,
    pub(super) peer: SocketAddr,
    pub(super) socket: WebSocket,
    /// The relay's end of the pair; the session has the other.
    pub(super) pipe: UnixStream,
    /// Resolves (with an error) once the session has ended.
    pub(super) session_ended: oneshot::Receiver<()>,
    /// The largest message accepted, for telling a client that sent a larger one.
    pub(super) message_limit: usize,
    pub(super) ping_every: Duration,
}

/// What the client's side asks the other direction to send: a notice, or a close.
enum Aside {
    Notice(&'static str),
    TooBig(String),
}

/// What the reading side knows of the client's liveness, for the keepalive.
struct Liveness {
    since: Instant,
    /// When something last came from the client, in milliseconds after `since`.
    heard_ms: AtomicU64,
    /// True while a message waits for the session to take it: the client is not to blame.
    held: AtomicBool,
}

impl Liveness {
    fn new() -> Liveness {
        Liveness {
            since: Instant::now(),
            heard_ms: AtomicU64::new(0),
            held: AtomicBool::new(false),
        }
    }

    fn hear(&self) {
        let ms = self.since.elapsed().as_millis() as u64;
        self.heard_ms.store(ms, Ordering::Relaxed);
    }

    fn heard(&self) -> Instant {
        self.since + Duration::from_millis(self.heard_ms.load(Ordering::Relaxed))
    }

    fn held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }
}

/// Relays until both sides are done. `relay` counts this relay for an upgrade's wait until
/// everything the session wrote has been delivered.
pub(super) async fn serve(mut c: Admitted, hub: Arc<Hub>, relay: TaskTrackerToken) {
    let (mut sink, mut stream) = c.socket.split();
    let (mut pipe_r, mut pipe_w) = c.pipe.split();
    // One notice at a time: a client sending binary messages in a loop is slowed to the pace at
    // which it reads the answers.
    let (asides_tx, mut asides) = mpsc::channel(1);
    let live = Liveness::new();
    let to_client = to_client(&mut sink, &mut pipe_r, &mut asides, c.ping_every);
    let from_client = from_client(&mut stream, &mut pipe_w, asides_tx, &live, c.message_limit);
    tokio::pin!(to_client, from_client);
    let dead_after = c.ping_every * 2;
    let mut relay = Some(relay);
    let (mut delivered, mut received, mut ended) = (None, None, false);
    let mut cut_off_at = Instant::now();
    // Bounded: each round ends one of the one-off waits, or the loop.
    let outcome = loop {
        // Done once everything owed was delivered (ending with a close) and the client has
        // answered it; or once the client has closed and nothing more can reach it.
        if delivered.is_some() && received.is_some() {
            break Ok(());
        }
        tokio::select! {
            done = &mut to_client, if delivered.is_none() => match done {
                Ok(n) => {
                    delivered = Some(n);
                    // An upgrade waiting for its notice to be delivered need not wait for more.
                    relay = None;
                    // The client's answer to the close is not waited for forever.
                    if !ended {
                        ended = true;
                        cut_off_at = Instant::now() + LINGER;
                    }
                }
                // After the client's close the connection takes no more messages: not a failure.
                Err(_) if received.is_some() => break Ok(()),
                Err(e) => break Err(e),
            },
            done = &mut from_client, if received.is_none() => match done {
                Ok(n) => {
                    received = Some(n);
                    // The session, which has read end-of-file, has a moment to finish writing.
                    if !ended {
                        ended = true;
                        cut_off_at = Instant::now() + LINGER;
                    }
                }
                Err(e) => break Err(e),
            },
            _ = &mut c.session_ended, if !ended => {
                ended = true;
                cut_off_at = Instant::now() + LINGER;
            }
            () = tokio::time::sleep_until(cut_off_at), if ended => {
                break if delivered.is_some() {
                    Err(io::Error::new(io::ErrorKind::TimedOut, "no answer to the close"))
                } else {
                    Err(io::Error::new(io::ErrorKind::TimedOut, "client not reading; cut off"))
                };
            }
            () = tokio::time::sleep_until(live.heard() + dead_after), if !ended => {
                // Something may have come since this wait began; only silence counts.
                if live.held() {
                    live.hear();
                } else if live.heard() + dead_after <= Instant::now() {
                    hub.close(c.id, LeaveReason::PingTimeout, None);
                    break Err(io::Error::new(io::ErrorKind::TimedOut, "no answer to pings"));
                }
            }
        }
    };
    drop(relay);
    match outcome {
        Ok(()) => debug!(
            client = c.id,
            peer = %c.peer,
            bytes_out = delivered,
            bytes_in = received,
            "WebSocket connection closed"
        ),
        Err(e) => debug!(client = c.id, peer = %c.peer, error = %e, "WebSocket connection ended"),
    }
}

type Sink = SplitSink<WebSocket, Message>;
type Source = SplitStream<WebSocket>;

/// The session's output to the client, one text message per line, then a close; pings meanwhile,
/// and what the reading side asks for. Returns the bytes relayed.
async fn to_client(
    sink: &mut Sink,
    pipe: &mut ReadHalf<'_>,
    asides: &mut mpsc::Receiver<Aside>,
    ping_every: Duration,
) -> io::Result<u64> {
    // Allocated when there is something to read, and let go once all of it went out: an idle
    // connection holds no buffer here.
    let mut buf = BytesMut::new();
    let mut pings = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut asides_open = true;
    let mut relayed = 0u64;
    loop {
        tokio::select! {
            ready = pipe.readable() => {
                ready?;
                buf.reserve(READ_CHUNK);
                let n = match pipe.try_read_buf(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                };
                relayed += n as u64;
                // Every complete line as a message of its own, then one flush for them all.
                while let Some(end) = memchr::memmem::find(&buf, b"\r\n") {
                    let mut line = buf.split_to(end + 2);
                    line.truncate(end);
                    sink.feed(Message::Text(text(line.freeze()))).await.map_err(broken)?;
                }
                if buf.len() > MAX_ROW {
                    sink.feed(Message::Text(text(buf.split().freeze()))).await.map_err(broken)?;
                }
                sink.flush().await.map_err(broken)?;
                if buf.is_empty() {
                    buf = BytesMut::new();
                }
            }
            aside = asides.recv(), if asides_open => match aside {
                Some(Aside::Notice(line)) => {
                    sink.send(Message::Text(Utf8Bytes::from_static(line))).await.map_err(broken)?;
                }
                Some(Aside::TooBig(line)) => {
                    sink.feed(Message::Text(line.into())).await.map_err(broken)?;
                    return close(sink, close_code::SIZE, "message too big").await.map(|()| relayed);
                }
                None => asides_open = false,
            },
            _ = pings.tick() => {
                sink.send(Message::Ping(Bytes::new())).await.map_err(broken)?;
            }
        }
    }
    close(sink, close_code::NORMAL, "").await?;
    Ok(relayed)
}

/// Sends a close with `code` and `reason`, and flushes it.
async fn close(sink: &mut Sink, code: u16, reason: &'static str) -> io::Result<()> {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    sink.send(Message::Close(Some(frame))).await.map_err(broken)
}

/// The client's messages to the session, each as one line, until the client closes (and its
/// close is answered) or goes. Returns the bytes handed to the session.
async fn from_client(
    stream: &mut Source,
    pipe: &mut WriteHalf<'_>,
    asides: mpsc::Sender<Aside>,
    live: &Liveness,
    limit: usize,
) -> io::Result<u64> {
    let mut handed = 0u64;
    // The session stops reading once it has ended; what comes after is read and dropped, so the
    // client's close still gets its answer.
    let mut session_gone = false;
    // Bounded by the client: each round takes one message off the connection.
    while let Some(message) = stream.next().await {
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                if let Some(too_big) = too_big(&e, limit) {
                    let _ = asides.send(Aside::TooBig(too_big)).await;
                    break;
                }
                return Err(broken(e));
            }
        };
        live.hear();
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                let _ = asides.send(Aside::Notice(BINARY)).await;
                continue;
            }
            // Pongs to pings are tungstenite's; a close is answered by it too, and the stream
            // then ends.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => continue,
        };
        let Some(one) = one_line(&text) else {
            let _ = asides.send(Aside::Notice(LINE_BREAK)).await;
            continue;
        };
        if session_gone {
            continue;
        }
        let mut line = Vec::with_capacity(one.len() + 1);
        line.extend_from_slice(one.as_bytes());
        line.push(b'\n');
        live.held.store(true, Ordering::Relaxed);
        let written = pipe.write_all(&line).await;
        live.held.store(false, Ordering::Relaxed);
        live.hear();
        match written {
            Ok(()) => handed += line.len() as u64,
            Err(_) => session_gone = true,
        }
    }
    // End-of-file for the session, as when a TCP client closes.
    let _ = pipe.shutdown().await;
    Ok(handed)
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

/// If `e` is tungstenite refusing a message over the limit: what to tell the client.
fn too_big(e: &axum::Error, limit: usize) -> Option<String> {
    let inner = std::error::Error::source(e)?;
    match inner.downcast_ref::<tungstenite::Error>()? {
        tungstenite::Error::Capacity(_) => Some(format!(
            "*** Message too long (limit {limit} bytes); closing the connection."
        )),
        _ => None,
    }
}

/// A line of the session's output as text: it writes UTF-8 only (everything it relays is
/// sanitised), but a row cut at [`MAX_ROW`] could end inside a character.
fn text(bytes: Bytes) -> Utf8Bytes {
    match Utf8Bytes::try_from(bytes.clone()) {
        Ok(text) => text,
        Err(_) => String::from_utf8_lossy(&bytes).into_owned().into(),
    }
}

fn broken(e: axum::Error) -> io::Error {
    io::Error::other(e)
}

/// Tells a refused client why (`line`) and closes it with 1013 ("try again later"), all by
/// `deadline`, then reads until it answers the close (or the deadline), so that the close is a
/// clean one.
pub(super) async fn refuse(
    socket: WebSocket,
    line: String,
    deadline: Instant,
    _permit: OwnedSemaphorePermit,
) {
    let (mut sink, mut stream) = socket.split();
    let told = tokio::time::timeout_at(deadline, async {
        sink.feed(Message::Text(line.into())).await?;
        let frame = CloseFrame {
            code: close_code::AGAIN,
            reason: Utf8Bytes::from_static("refused"),
        };
        sink.send(Message::Close(Some(frame))).await
    })
    .await;
    if !matches!(told, Ok(Ok(()))) {
        return;
    }
    let linger = deadline.min(Instant::now() + LINGER);
    while let Ok(Some(Ok(_))) = tokio::time::timeout_at(linger, stream.next()).await {}
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
