//! The relay without I/O: tungstenite's protocol over four plain buffers ([`Relay`]), and the
//! translation between WebSocket messages and the session's lines.
//!
//! - To the client: what the session writes is split at its CRLFs, and each line goes out as one
//!   text message without them (a wrapped line's continuation rows are lines of their own, as on
//!   a terminal). When the session shuts its end after its last line, a close (1000) follows.
//! - From the client: each text message is one line; it goes to the session with an LF, as if
//!   typed into netcat, and the session frames, limits, sanitises and throttles it like any
//!   other. One trailing line break is tolerated (some tools send one); a message with a line
//!   break inside, or a binary message, is refused with a `***` line to its sender and not sent.
//!   A message over the WebSocket's own limit (see [`crate::ws::message_limit`]) is not read:
//!   the client is told and closed with 1009.
//!
//! The protocol is tungstenite's `WebSocketContext`, driven without I/O of its own: client bytes
//! wait in [`Inbound`] and are given to it one whole frame at a time, and the frames it writes go
//! to an owed-bytes buffer that the relay's task writes to the socket. So at every await point
//! the relay's whole state is in four plain buffers, which is what an upgrade moves.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;

use bytes::{Bytes, BytesMut};
use tokio::net::UnixStream;
use tokio::time::Instant;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Message, Utf8Bytes};

use super::{Io, READ_BUFFER, READ_CHUNK};
use crate::ws::frames::Inbound;
use crate::ws::handover::{Given, WsState};

/// The client's messages are taken only while less than this is owed to it (its notices, the
/// answers to its pings): one that does not read is not read either.
const OWED_LIMIT: usize = 2 * READ_CHUNK;
/// A row of output longer than this without a CRLF goes out as a message of its own. The session
/// never writes one (its lines are the sanitised input of at most `max_line_bytes` with a prefix,
/// or its own short notices); this only bounds what the relay holds.
const MAX_ROW: usize = 4 << 20;

/// Told to a sender of a binary message.
const BINARY: &str = "*** Binary messages are not accepted: send text, one line per message.";
/// Told to a sender of a message with a line break inside.
const LINE_BREAK: &str =
    "*** One line per message: this one had a line break in it; it was not sent.";

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

/// The protocol and the four buffers: everything the relay holds.
pub(super) struct Relay {
    ws: WebSocketContext,
    pub(super) inbound: Inbound,
    /// Frames for the client, not yet written.
    pub(super) owed: BytesMut,
    /// The rest of a line for the session, not yet written to the pair.
    pub(super) to_session: Bytes,
    /// Session output read but not yet a whole line.
    pub(super) row: BytesMut,
    limit: usize,
    /// When something last came from the client.
    pub(super) heard: Instant,
    /// The client will send nothing more (it closed, or it is being closed).
    pub(super) input_done: bool,
    /// Nothing more goes to the client but what is owed (a close is among it, if one could go).
    pub(super) output_done: bool,
    /// The session's end of the pair was read to its end.
    pub(super) pipe_eof: bool,
    /// Writing to the session failed: it has gone, and later lines are dropped.
    pub(super) session_gone: bool,
}

impl Relay {
    pub(super) fn new(state: WsState, limit: usize) -> Relay {
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
    pub(super) fn send(&mut self, message: Message) {
        if self.ws.can_write() {
            let (ws, mut wire) = self.wire();
            // Never fails while it can write: the wire takes everything.
            let _ = ws.write(&mut wire, message);
        }
    }

    /// Queues a close with `code`, after which nothing more goes out.
    pub(super) fn close(&mut self, code: CloseCode, reason: &'static str) {
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
    pub(super) fn step(&mut self, pipe: &UnixStream) -> io::Result<()> {
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
    pub(super) fn finished(&self) -> bool {
        self.input_done && self.output_done && self.owed.is_empty()
    }

    /// Whether the client's next bytes are wanted now.
    pub(super) fn wants_input(&self) -> bool {
        !self.input_done
            && !self.inbound.eof
            && self.to_session.is_empty()
            && self.owed.len() < OWED_LIMIT
            && !self.inbound.ready(self.limit)
    }

    /// The state to hand over, if the relay is between two steps of an ordinary conversation.
    pub(super) fn give(&mut self, io: &Io, pipe: &UnixStream) -> Option<Given> {
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

/// The line a text message carries: the text without one trailing LF or CR LF; None if a line
/// break is left inside.
fn one_line(text: &str) -> Option<&str> {
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
