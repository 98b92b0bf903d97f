//! A session's input side: reading, framing, sanitising and handling lines, flood control, and the
//! input deadlines (handshake, idle). All synchronous; the driver in the parent module decides when
//! to call it. Reads land in a per-thread buffer: only an incomplete line (in the framer) or input
//! paused by flood control (the backlog) is ever held per connection, and neither has any capacity
//! while the client is idle.

use std::cell::RefCell;
use std::io;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::info;

use crate::client::{Client, ClientId, Lag, LeaveReason};
use crate::config::Flood;
use crate::hub::{Hub, NickRefused};
use crate::protocol::format::{self, notice, notices};
use crate::protocol::{ClientCmd, Frame, HELP, LineFramer, NICK_PROMPT, parse_line, sanitise_into};
use crate::settings::Snapshot;

/// Most input one session relays when the daemon stops (see [`Input::drain_pending`]).
const DRAIN_MAX: usize = 1 << 20;

/// Bytes read per `read()`: large enough that a busy sender's lines arrive in few syscalls and are
/// published as few batches. Per worker thread, not per connection.
const READ_CHUNK: usize = 64 * 1024;

thread_local! {
    /// Socket reads land here.
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
    /// Sanitised text of the line being handled.
    static LINE_BUF: RefCell<String> = RefCell::new(String::with_capacity(1024));
}

/// Reads and discards whatever is readable now; true once the peer has closed (or failed).
pub(super) fn drain(stream: &TcpStream) -> bool {
    READ_BUF.with_borrow_mut(|buf| match recv(stream, buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    })
}

/// One `recv()` into `buf`. A short read (less than `buf` holds) emptied the socket's receive
/// queue, so the socket's readiness is cleared then as well, as tokio's own `poll_read` does: the
/// next wait sleeps instead of spending a syscall to learn "would block". Tokio never clears "read
/// closed", and skips the clear if a newer readiness event came in meanwhile, so a FIN or data
/// that arrived after the read is still seen.
fn recv(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    use nix::sys::socket::{MsgFlags, recv};
    use std::os::fd::AsRawFd;
    let mut short = None;
    let res = stream.try_io(Interest::READABLE, || {
        let n = recv(stream.as_raw_fd(), buf, MsgFlags::empty()).map_err(io::Error::from)?;
        if n > 0 && n < buf.len() {
            short = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    short.map_or(res, Ok)
}

/// Why a client leaves, decided while handling its input, and the last line it is sent.
pub(super) struct Leaving {
    pub(super) reason: LeaveReason,
    pub(super) farewell: Option<Bytes>,
}

/// The input side of one session.
pub(super) struct Input {
    framer: LineFramer,
    pub(super) ctx: LineCtx,
    /// Input read but not yet consumed because flood control paused us. Empty (no capacity) otherwise.
    backlog: Vec<u8>,
    /// Reading is paused by flood control until then.
    paused_until: Option<Instant>,
    /// The last congestion pause ended without relief (the congested readers stalled, or it hit
    /// its cap): the next read goes ahead even if the room is still congested.
    pub(super) pause_expired: bool,
    /// False once the client has left (EOF, quit, timeout): nothing more is read.
    reading: bool,
}

impl Input {
    pub(super) fn new(hub: Arc<Hub>, client: Arc<Client>) -> Self {
        let cfg = Snapshot::of(hub.settings());
        Input {
            framer: LineFramer::new(cfg.settings.max_line_bytes),
            ctx: LineCtx {
                bucket: cfg.settings.flood.map(TokenBucket::new),
                hub,
                client,
                cfg,
                phase: None,
                batch: Vec::new(),
                batch_lines: 0,
                told_utf8: false,
                leave: None,
                throttle: false,
                published: 0,
                congested: false,
            },
            backlog: Vec::new(),
            paused_until: None,
            pause_expired: false,
            reading: true,
        }
    }

    /// Whether to wait for the socket to become readable.
    pub(super) fn wants_read(&self) -> bool {
        self.reading && self.backlog.is_empty() && !self.paused()
    }

    fn paused(&self) -> bool {
        self.paused_until.is_some()
    }

    /// Whether paused input can be handled now.
    pub(super) fn has_backlog_ready(&self) -> bool {
        self.reading && !self.backlog.is_empty() && !self.paused()
    }

    /// One non-blocking read, handled at once. Returns true if it published chat to the room.
    pub(super) fn read(&mut self, stream: &TcpStream) -> bool {
        let before = self.ctx.published;
        self.follow_config();
        READ_BUF.with_borrow_mut(|buf| match recv(stream, buf) {
            Ok(0) => {
                // Clean EOF: a last unterminated line still counts (`printf 'hi' | nc -N`).
                let ctx = &mut self.ctx;
                self.framer.finish(|frame| {
                    let _ = ctx.on_frame(frame);
                });
                ctx.flush();
                ctx.set_leave(LeaveReason::Closed, None);
            }
            Ok(n) => {
                self.ctx
                    .client
                    .stats
                    .bytes_in
                    .fetch_add(n as u64, Ordering::Relaxed);
                let used = self.feed(&buf[..n]);
                if used < n {
                    self.backlog = buf[used..n].to_vec();
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            // A reset or timeout: what was buffered of an unfinished line is dropped, not relayed.
            Err(e) => self
                .ctx
                .set_leave(crate::client::outbox::socket_error_reason(&e), None),
        });
        self.ctx.published != before
    }

    /// Called before consuming input: while some member is congested, input is held back (the
    /// session waits on [`Congestion::until_relieved`](crate::client::Congestion)), so a burst is
    /// paced to what readers can take. Returns true if input must wait.
    pub(super) fn hold_for_congestion(&mut self) -> bool {
        !std::mem::take(&mut self.pause_expired) && self.ctx.hub.congestion().any()
    }

    /// True (once) if the last publish found the room congested.
    pub(super) fn take_congested(&mut self) -> bool {
        std::mem::take(&mut self.ctx.congested)
    }

    /// Handles input paused by flood control, as far as the bucket allows. Returns true if it
    /// published chat to the room.
    pub(super) fn consume_backlog(&mut self) -> bool {
        let before = self.ctx.published;
        self.follow_config();
        let backlog = std::mem::take(&mut self.backlog);
        let used = self.feed(&backlog);
        if used < backlog.len() {
            self.backlog = backlog[used..].to_vec();
        }
        self.ctx.published != before
    }

    /// Frames and handles `input`, stopping early on throttle or leave; publishes the batch.
    fn feed(&mut self, input: &[u8]) -> usize {
        let ctx = &mut self.ctx;
        let used = self.framer.feed(input, |frame| ctx.on_frame(frame));
        ctx.flush();
        if std::mem::take(&mut ctx.throttle)
            && let (Some(bucket), Some(flood)) = (&ctx.bucket, ctx.cfg.settings.flood)
        {
            let until = Instant::now() + bucket.wait(flood);
            self.paused_until = self.paused_until.max(Some(until));
        }
        used
    }

    /// Stopping: reads and relays everything the client has already sent, ignoring flood control
    /// and congestion (the room is about to close), up to [`DRAIN_MAX`] bytes.
    pub(super) fn drain_pending(&mut self, stream: &TcpStream) {
        self.ctx.bucket = None;
        let mut budget = DRAIN_MAX;
        // Bounded in rounds too: each round reads or consumes something, or ends the loop.
        for _ in 0..DRAIN_MAX / 512 {
            self.paused_until = None;
            if !self.reading || self.ctx.leave.is_some() {
                break;
            }
            if !self.backlog.is_empty() {
                self.consume_backlog();
                continue;
            }
            let before = self.ctx.client.stats.bytes_in.load(Ordering::Relaxed);
            self.read(stream);
            let got = self.ctx.client.stats.bytes_in.load(Ordering::Relaxed) - before;
            if (got == 0 && self.backlog.is_empty()) || budget <= got as usize {
                break;
            }
            budget -= got as usize;
        }
        self.paused_until = None;
    }

    /// The reason the client is leaving, once (then reading stops for good).
    pub(super) fn take_leave(&mut self) -> Option<Leaving> {
        let leaving = *self.ctx.leave.take()?;
        self.reading = false;
        self.backlog = Vec::new();
        Some(leaving)
    }

    /// The earliest input deadline: end of a flood pause, handshake or idle timeout.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        if !self.reading {
            return None;
        }
        let timeout = match self.ctx.phase {
            None => {
                let connected = Instant::from_std(self.ctx.client.connected);
                self.ctx
                    .cfg
                    .settings
                    .handshake_timeout
                    .map(|d| connected + d)
            }
            Some(_) => self.ctx.cfg.settings.idle_timeout.map(|d| {
                let client = &self.ctx.client;
                let last =
                    Duration::from_millis(client.stats.last_active_ms.load(Ordering::Relaxed));
                Instant::from_std(client.connected) + last + d
            }),
        };
        [timeout, self.paused_until].into_iter().flatten().min()
    }

    /// Acts on input deadlines that have passed.
    pub(super) fn on_time(&mut self, now: Instant) {
        if self.paused_until.is_some_and(|t| t <= now) {
            self.paused_until = None;
        }
        if !self.paused()
            && self.backlog.is_empty()
            && self.next_deadline().is_some_and(|t| t <= now)
        {
            let (reason, farewell) = self.ctx.timed_out();
            self.ctx.set_leave(reason, Some(&farewell));
        }
    }

    /// Picks up a reloaded configuration before handling more input.
    fn follow_config(&mut self) {
        let old_flood = self.ctx.cfg.settings.flood;
        if !self.ctx.cfg.refresh(self.ctx.hub.settings()) {
            return;
        }
        let cfg = &self.ctx.cfg.settings;
        self.framer.set_max_line(cfg.max_line_bytes);
        if cfg.flood != old_flood {
            self.ctx.bucket = cfg.flood.map(TokenBucket::new);
        }
    }
}

/// Per-client flood control: a token bucket that pauses reading when empty. Its rate and burst
/// are read from the configuration in force (not copied here: every byte of session state is paid
/// by every idle connection).
///
/// The bucket may run into debt by what one timer tick ([`TICK`]) refills: a pause shorter than
/// the timer's resolution would last a whole tick anyway and cap a high `flood_rate` at `burst`
/// lines per tick. So a line is only held back when the wait is worth a timer, and a limiter that
/// lets lines through costs nothing but arithmetic.
#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    last: Instant,
    /// Inside a throttle episode (counted and logged once per episode).
    throttled: bool,
}

/// The runtime timer's resolution.
const TICK: Duration = Duration::from_millis(1);

impl TokenBucket {
    fn new(flood: Flood) -> Self {
        TokenBucket {
            tokens: f64::from(flood.burst),
            last: Instant::now(),
            throttled: false,
        }
    }

    fn refill(&mut self, now: Instant, flood: Flood) {
        let burst = f64::from(flood.burst);
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * flood.per_sec).min(burst);
        self.last = now;
    }

    /// Spends a token for one line; returns true when the next line must wait.
    fn spend(&mut self, now: Instant, flood: Flood) -> bool {
        self.refill(now, flood);
        if self.tokens >= f64::from(flood.burst) {
            self.throttled = false;
        }
        self.tokens -= 1.0;
        let slack = flood.per_sec * TICK.as_secs_f64();
        self.tokens < 1.0 - slack
    }

    /// How long until one token is available (at least a tick when [`spend`](Self::spend) said
    /// to wait). Finite whatever the rate: `--check-config` accepts tiny positive rates.
    fn wait(&self, flood: Flood) -> Duration {
        let secs = ((1.0 - self.tokens) / flood.per_sec).max(0.0);
        Duration::try_from_secs_f64(secs)
            .unwrap_or(MAX_FLOOD_WAIT)
            .min(MAX_FLOOD_WAIT)
    }
}

/// The longest a flood pause lasts in one go (the bucket is checked again after it): keeps the
/// deadline arithmetic finite for any rate the configuration accepts.
const MAX_FLOOD_WAIT: Duration = Duration::from_secs(3600);

/// Everything a line needs while being handled (kept apart from the framer that calls it).
pub(super) struct LineCtx {
    pub(super) hub: Arc<Hub>,
    pub(super) client: Arc<Client>,
    pub(super) cfg: Snapshot,
    /// The nickname once joined; None while still choosing one.
    phase: Option<Arc<str>>,
    bucket: Option<TokenBucket>,
    /// Chat lines produced by the current read, published together.
    batch: Vec<u8>,
    batch_lines: u32,
    told_utf8: bool,
    /// Set when a line ends the session (quit, overflow of our own replies).
    /// Boxed: it is set once per connection, and every byte of session state is paid by every
    /// idle connection.
    leave: Option<Box<Leaving>>,
    /// Set when the bucket ran dry: stop consuming input until it refills.
    throttle: bool,
    /// Publishes made (wraps; only compared for change).
    published: u32,
    /// Set when a publish found the room congested: pause before consuming more input.
    congested: bool,
}

impl LineCtx {
    fn id(&self) -> ClientId {
        self.client.id
    }

    /// Queues a reply for this client alone. A client that does not read its own replies is as slow
    /// as one that does not read the room.
    fn reply(&mut self, buf: Bytes, lines: u32) {
        let limit = self.cfg.settings.max_queue_bytes;
        if self.hub.reply(&self.client, buf, lines, limit) == Lag::Overflow {
            self.set_leave(LeaveReason::QueueFull, None);
        }
    }

    fn say(&mut self, text: &str) {
        self.reply(notice(text), 1);
    }

    /// Counts a line added to the batch, publishing early when the batch is big: one publish must stay
    /// a small fraction of a recipient's queue limit, or a reader that keeps up but has one batch in
    /// flight would look slow.
    fn batched(&mut self) {
        self.batch_lines += 1;
        let cap = (self.cfg.settings.max_queue_bytes / 8).clamp(1024, 16 * 1024);
        if self.batch.len() >= cap {
            self.flush();
        }
    }

    /// Publishes the chat lines gathered so far as one shared buffer.
    fn flush(&mut self) {
        if self.batch_lines > 0 {
            self.published = self.published.wrapping_add(1);
            let buf = Bytes::from(std::mem::take(&mut self.batch));
            let lines = std::mem::take(&mut self.batch_lines);
            if self.hub.publish(self.id(), buf, lines) {
                self.congested = true;
            }
        }
    }

    /// Why the client leaves when its handshake or idle deadline passes, and what it is told.
    fn timed_out(&self) -> (LeaveReason, String) {
        match self.phase {
            None => {
                let secs = self
                    .cfg
                    .settings
                    .handshake_timeout
                    .unwrap_or_default()
                    .as_secs();
                let text = format!("No nickname within {secs} s; goodbye.");
                (LeaveReason::HandshakeTimeout, text)
            }
            Some(_) => {
                let secs = self.cfg.settings.idle_timeout.unwrap_or_default().as_secs();
                (
                    LeaveReason::Idle,
                    format!("Idle for {secs} s; disconnecting."),
                )
            }
        }
    }

    /// Decides that the client leaves (the first reason wins), with an optional last line. The
    /// line is queued by the hub together with the removal, so nothing can follow it.
    fn set_leave(&mut self, reason: LeaveReason, farewell: Option<&str>) {
        if self.leave.is_none() {
            self.leave = Some(Box::new(Leaving {
                reason,
                farewell: farewell.map(notice),
            }));
        }
    }

    fn on_frame(&mut self, frame: Frame<'_>) -> ControlFlow<()> {
        let raw = match frame {
            Frame::TooLong => {
                let max = self.cfg.settings.max_line_bytes;
                self.say(&format!(
                    "Line too long (limit {max} bytes); it was not sent."
                ));
                return self.next_step();
            }
            Frame::Line(raw) => raw,
        };
        LINE_BUF.with_borrow_mut(|line| {
            line.clear();
            let invalid = sanitise_into(raw, line);
            if invalid && !self.told_utf8 {
                self.told_utf8 = true;
                self.say("This server expects UTF-8; invalid bytes were replaced with \u{FFFD}.");
            }
            if line.is_empty() {
                return ControlFlow::Continue(());
            }
            self.client.stats.lines_in.fetch_add(1, Ordering::Relaxed);
            self.client.touch();
            match &self.phase {
                None => self.on_nick_line(line.trim()),
                Some(nick) => {
                    let nick = nick.clone();
                    self.on_chat_line(&nick, line);
                }
            }
            if let (Some(bucket), Some(flood)) = (&mut self.bucket, self.cfg.settings.flood)
                && bucket.spend(Instant::now(), flood)
            {
                self.throttle = true;
                if !bucket.throttled {
                    bucket.throttled = true;
                    self.hub.counters.throttled.fetch_add(1, Ordering::Relaxed);
                    info!(
                        client = self.id(),
                        event = "throttle",
                        "flood limit reached; slowing reads"
                    );
                }
            }
            self.next_step()
        })
    }

    fn next_step(&self) -> ControlFlow<()> {
        if self.leave.is_some() || self.throttle || self.congested {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn on_nick_line(&mut self, nick: &str) {
        if nick.eq_ignore_ascii_case("/quit") || nick.to_ascii_lowercase().starts_with("/quit ") {
            self.set_leave(LeaveReason::Quit(None), Some("Goodbye."));
            return;
        }
        match self.hub.join(self.id(), nick) {
            Ok(nick) => {
                self.phase = Some(nick);
            }
            Err(NickRefused::Gone) => self.set_leave(LeaveReason::ShuttingDown, None),
            Err(why) => self.reply(notices([why.to_string().as_str(), NICK_PROMPT]), 2),
        }
    }

    fn on_chat_line(&mut self, nick: &str, line: &str) {
        match parse_line(line) {
            ClientCmd::Say(text) => {
                format::push_say(&mut self.batch, nick, text);
                self.batched();
            }
            ClientCmd::Me(text) => {
                format::push_action(&mut self.batch, nick, text);
                self.batched();
            }
            other => {
                // Anything but chat is handled in order: publish what came before it first.
                self.flush();
                self.on_command(nick, other);
            }
        }
    }

    fn on_command(&mut self, nick: &str, cmd: ClientCmd<'_>) {
        match cmd {
            ClientCmd::Say(_) | ClientCmd::Me(_) => unreachable!("chat lines are batched"),
            ClientCmd::Nick(new) => match self.hub.rename(self.id(), new) {
                Ok((_, new)) => {
                    self.phase = Some(new);
                }
                Err(NickRefused::Gone) => self.set_leave(LeaveReason::ShuttingDown, None),
                Err(why) => self.say(&format!("Cannot change nickname: {why}")),
            },
            ClientCmd::Who => {
                let lines = self.hub.who_lines();
                self.reply(lines, 1);
            }
            ClientCmd::Msg { to, text } => {
                let mut line = BytesMut::new();
                format::push_private(&mut line, nick, text);
                match self.hub.send_private(to, line.freeze()) {
                    Some(to) => self.say(&format!("-> *{to}* {text}")),
                    None => self.say(&format!("No such nickname: {to}")),
                }
            }
            ClientCmd::Quit(reason) => {
                self.set_leave(
                    LeaveReason::Quit(reason.map(str::to_owned)),
                    Some("Goodbye."),
                );
            }
            ClientCmd::Help => self.reply(notices(HELP.iter().copied()), HELP.len() as u32),
            ClientCmd::Usage(usage) => self.say(usage),
            ClientCmd::Unknown(name) => self.say(&format!(
                "Unknown command /{name}; type /help for the list."
            )),
        }
    }
}
