//! One client's connection, from greeting to close, driven by a single task.
//!
//! The task runs two halves over the same `&TcpStream`:
//! - the reader waits for readability, reads into a per-thread buffer, frames and sanitises lines, and
//!   publishes everything one read produced as *one* shared buffer (fan-out is paid per batch, not per
//!   line). Flood control pauses reading (TCP back-pressure) instead of dropping lines.
//! - the writer drains the client's outbox with vectored writes: whatever queued up while the socket was
//!   busy goes out in one syscall, and a lone line goes out at once.
//!
//! Reads never wait on writes. The session ends when the writer finishes (kick, too slow, shutdown, write
//! error) or when the reader does (EOF, quit, timeouts); either way [`Hub::leave`] is called, which is a
//! no-op the second time. Between reads a session holds no heap buffers of its own.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::ops::ControlFlow;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout_at};
use tracing::{debug, info};

use crate::client::{Client, ClientId, Close, LeaveReason, Pushed, Taken};
use crate::config::{Config, Flood};
use crate::hub::{Hub, NickRefused};
use crate::protocol::format::{self, notice, notices};
use crate::protocol::{ClientCmd, Frame, HELP, LineFramer, parse_line, sanitise_into};

/// Bytes read per `read()`: large enough that a busy sender's lines arrive in few syscalls and are
/// published as few batches. Per worker thread, not per connection.
const READ_CHUNK: usize = 64 * 1024;
/// Buffers handed to one `writev()` (well under IOV_MAX).
const WRITE_SLICES: usize = 64;
/// How long a closing connection may take to finish writing and be read to EOF (lingering close).
const LINGER: Duration = Duration::from_secs(2);

thread_local! {
    /// Socket reads land here; only an incomplete line or a throttled remainder is copied per session.
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
    /// Sanitised text of the line being handled.
    static LINE_BUF: RefCell<String> = RefCell::new(String::with_capacity(1024));
}

/// The prompt that asks for a nickname.
pub const NICK_PROMPT: &str = "Choose a nickname:";

/// Runs a registered client's connection to the end.
pub async fn run(hub: Arc<Hub>, client: Arc<Client>, stream: TcpStream) {
    let id = client.id;
    let cfg = hub.config();
    client.outbox.push(hub.greeting(), 1, usize::MAX);

    let mut writer = Writer {
        client: client.clone(),
        hub: hub.clone(),
        spare: Vec::new(),
    };
    let mut reader = Reader::new(hub.clone(), client.clone(), cfg);
    let writing = writer.run(&stream);
    tokio::pin!(writing);
    let end = tokio::select! {
        end = &mut writing => end,
        reason = reader.run(&stream) => {
            hub.leave(id, reason.clone());
            // Deliver what is still queued (a goodbye, a /who reply), but not forever.
            let limit = hub.config().write_timeout.min(LINGER);
            match tokio::time::timeout(limit, &mut writing).await {
                Ok(end) => end,
                Err(_) => WriterEnd::Failed(reason),
            }
        }
    };
    match end {
        WriterEnd::Done(Close::Flush(reason)) => {
            hub.leave(id, reason);
            linger(&stream).await;
        }
        WriterEnd::Done(Close::Abort(reason)) | WriterEnd::Failed(reason) => {
            hub.leave(id, reason);
        }
    }
    debug!(client = id, "connection closed");
}

/// Half-closes the connection and reads (discarding) until the peer closes or [`LINGER`] passes, so
/// the last lines we sent are not destroyed by a reset caused by input the peer sent meanwhile.
async fn linger(stream: &TcpStream) {
    if nix::sys::socket::shutdown(stream.as_raw_fd(), nix::sys::socket::Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    while let Ok(Ok(())) = timeout_at(deadline, stream.readable()).await {
        let done = READ_BUF.with_borrow_mut(|buf| match stream.try_read(buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        });
        if done {
            break;
        }
    }
}

/// How the writer stopped.
enum WriterEnd {
    /// The outbox was closed (and, for `Flush`, fully written).
    Done(Close),
    /// The socket failed or stalled.
    Failed(LeaveReason),
}

struct Writer {
    client: Arc<Client>,
    hub: Arc<Hub>,
    /// The previous batch's vector, handed back to the outbox so steady traffic does not allocate.
    spare: Vec<Bytes>,
}

impl Writer {
    async fn run(&mut self, stream: &TcpStream) -> WriterEnd {
        loop {
            match self.client.outbox.take(std::mem::take(&mut self.spare)) {
                Taken::Empty => self.client.outbox.notified().await,
                Taken::Done(close) => return WriterEnd::Done(close),
                Taken::Data(mut batch) => {
                    if let Err(end) = self.write_batch(stream, &mut batch).await {
                        return end;
                    }
                    batch.clear();
                    self.spare = batch;
                }
            }
        }
    }

    /// Writes every buffer of `batch`, as few `writev()`s as the socket allows. Gives up when the
    /// socket accepts nothing for the write timeout, or at once when the outbox is aborted.
    async fn write_batch(&self, stream: &TcpStream, batch: &mut [Bytes]) -> Result<(), WriterEnd> {
        let write_timeout = self.hub.config().write_timeout;
        let mut head = 0;
        let mut deadline = Instant::now() + write_timeout;
        while head < batch.len() {
            let mut slices = [IoSlice::new(&[]); WRITE_SLICES];
            let n = (batch.len() - head).min(WRITE_SLICES);
            for (slot, buf) in slices.iter_mut().zip(&batch[head..head + n]) {
                *slot = IoSlice::new(buf);
            }
            match stream.try_write_vectored(&slices[..n]) {
                Ok(0) => return Err(WriterEnd::Failed(LeaveReason::Closed)),
                Ok(mut written) => {
                    self.client.outbox.sent(written);
                    self.client
                        .stats
                        .bytes_out
                        .fetch_add(written as u64, Ordering::Relaxed);
                    while written > 0 {
                        let len = batch[head].len();
                        if written >= len {
                            written -= len;
                            head += 1;
                        } else {
                            batch[head].advance(written);
                            written = 0;
                        }
                    }
                    deadline = Instant::now() + write_timeout;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tokio::select! {
                        ready = timeout_at(deadline, stream.writable()) => match ready {
                            Err(_) => return Err(WriterEnd::Failed(LeaveReason::WriteTimeout)),
                            Ok(Err(_)) => return Err(WriterEnd::Failed(LeaveReason::Closed)),
                            Ok(Ok(())) => {}
                        },
                        // A close (e.g. abort as too slow) must not wait for the socket to drain.
                        () = self.client.outbox.notified() => {}
                    }
                    if self.client.outbox.aborted() {
                        return Err(WriterEnd::Failed(LeaveReason::QueueFull));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(WriterEnd::Failed(LeaveReason::Closed)),
            }
        }
        Ok(())
    }
}

/// Per-client flood control: a token bucket that pauses reading when empty.
#[derive(Debug)]
struct TokenBucket {
    flood: Flood,
    tokens: f64,
    last: Instant,
    /// Inside a throttle episode (counted and logged once per episode).
    throttled: bool,
}

impl TokenBucket {
    fn new(flood: Flood) -> Self {
        TokenBucket {
            flood,
            tokens: f64::from(flood.burst),
            last: Instant::now(),
            throttled: false,
        }
    }

    fn refill(&mut self, now: Instant) {
        let burst = f64::from(self.flood.burst);
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.flood.per_sec).min(burst);
        self.last = now;
    }

    /// Spends a token for one line; returns true when the next line must wait.
    fn spend(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= f64::from(self.flood.burst) {
            self.throttled = false;
        }
        self.tokens -= 1.0;
        self.tokens < 1.0
    }

    /// How long until one token is available.
    fn wait(&self) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens) / self.flood.per_sec).max(0.0))
    }
}

/// Where the client is in its life.
enum Phase {
    /// Connected, choosing a nickname.
    Handshake,
    /// Joined under this nickname.
    Joined(Arc<str>),
}

/// Everything a line needs while being handled (kept apart from the framer that calls it).
struct LineCtx {
    hub: Arc<Hub>,
    client: Arc<Client>,
    cfg: Arc<Config>,
    phase: Phase,
    bucket: Option<TokenBucket>,
    /// Chat lines produced by the current read, published together.
    batch: BytesMut,
    batch_lines: u32,
    told_utf8: bool,
    last_line: Instant,
    /// Set when a line ends the session (quit, overflow of our own replies).
    leave: Option<LeaveReason>,
    /// Set when the bucket ran dry: stop consuming input until it refills.
    throttle: bool,
}

struct Reader {
    framer: LineFramer,
    ctx: LineCtx,
    /// Input read but not yet consumed because flood control paused us. Empty (no capacity) otherwise.
    backlog: Vec<u8>,
}

enum Read {
    Data,
    WouldBlock,
    Eof,
    Error,
}

impl Reader {
    fn new(hub: Arc<Hub>, client: Arc<Client>, cfg: Arc<Config>) -> Self {
        Reader {
            framer: LineFramer::new(cfg.max_line_bytes),
            ctx: LineCtx {
                hub,
                client,
                bucket: cfg.flood.map(TokenBucket::new),
                cfg,
                phase: Phase::Handshake,
                batch: BytesMut::new(),
                batch_lines: 0,
                told_utf8: false,
                last_line: Instant::now(),
                leave: None,
                throttle: false,
            },
            backlog: Vec::new(),
        }
    }

    /// Reads and handles input until the client leaves; returns why.
    async fn run(&mut self, stream: &TcpStream) -> LeaveReason {
        let handshake_deadline = self.ctx.cfg.handshake_timeout.map(|d| Instant::now() + d);
        loop {
            if let Some(reason) = self.ctx.leave.take() {
                return reason;
            }
            if self.ctx.throttle {
                self.ctx.throttle = false;
                if let Some(bucket) = &self.ctx.bucket {
                    sleep(bucket.wait()).await;
                }
            }
            if !self.backlog.is_empty() {
                self.follow_config();
                let backlog = std::mem::take(&mut self.backlog);
                let used = self.feed(&backlog);
                if used < backlog.len() {
                    self.backlog = backlog[used..].to_vec();
                }
                continue;
            }
            let deadline = match self.ctx.phase {
                Phase::Handshake => handshake_deadline,
                Phase::Joined(_) => self.ctx.cfg.idle_timeout.map(|d| self.ctx.last_line + d),
            };
            let ready = match deadline {
                Some(at) => match timeout_at(at, stream.readable()).await {
                    Ok(r) => r,
                    Err(_) => return self.ctx.timed_out(),
                },
                None => stream.readable().await,
            };
            if ready.is_err() {
                return LeaveReason::Closed;
            }
            // A reload may have happened while we waited: new input obeys the new limits.
            self.follow_config();
            match self.read(stream) {
                Read::Data | Read::WouldBlock => {}
                Read::Eof => {
                    let ctx = &mut self.ctx;
                    self.framer.finish(|frame| {
                        let _ = ctx.on_frame(frame);
                    });
                    ctx.flush();
                    return ctx.leave.take().unwrap_or(LeaveReason::Closed);
                }
                Read::Error => return LeaveReason::Closed,
            }
        }
    }

    /// One non-blocking read into the thread's buffer, handled at once.
    fn read(&mut self, stream: &TcpStream) -> Read {
        READ_BUF.with_borrow_mut(|buf| match stream.try_read(buf) {
            Ok(0) => Read::Eof,
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
                Read::Data
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Read::WouldBlock
            }
            Err(_) => Read::Error,
        })
    }

    /// Frames and handles `input`, stopping early on throttle or leave; publishes the batch.
    fn feed(&mut self, input: &[u8]) -> usize {
        let ctx = &mut self.ctx;
        let used = self.framer.feed(input, |frame| ctx.on_frame(frame));
        ctx.flush();
        used
    }

    /// Picks up a reloaded configuration between reads.
    fn follow_config(&mut self) {
        let cfg = self.ctx.hub.config();
        if Arc::ptr_eq(&cfg, &self.ctx.cfg) {
            return;
        }
        self.framer.set_max_line(cfg.max_line_bytes);
        if cfg.flood != self.ctx.cfg.flood {
            self.ctx.bucket = cfg.flood.map(TokenBucket::new);
        }
        self.ctx.cfg = cfg;
    }
}

impl LineCtx {
    fn id(&self) -> ClientId {
        self.client.id
    }

    /// Queues a reply for this client alone. A client that does not read its own replies is as slow
    /// as one that does not read the room.
    fn reply(&mut self, buf: Bytes, lines: u32) {
        if self
            .client
            .outbox
            .push(buf, lines, self.cfg.max_queue_bytes)
            == Pushed::Overflow
        {
            self.leave.get_or_insert(LeaveReason::QueueFull);
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
        let cap = (self.cfg.max_queue_bytes / 8).clamp(1024, 16 * 1024);
        if self.batch.len() >= cap {
            self.flush();
        }
    }

    /// Publishes the chat lines gathered so far as one shared buffer.
    fn flush(&mut self) {
        if self.batch_lines > 0 {
            let buf = std::mem::take(&mut self.batch).freeze();
            self.hub
                .publish(self.id(), buf, std::mem::take(&mut self.batch_lines));
        }
    }

    fn timed_out(&mut self) -> LeaveReason {
        match self.phase {
            Phase::Handshake => {
                let secs = self.cfg.handshake_timeout.unwrap_or_default().as_secs();
                self.say(&format!("No nickname within {secs} s; goodbye."));
                LeaveReason::HandshakeTimeout
            }
            Phase::Joined(_) => {
                let secs = self.cfg.idle_timeout.unwrap_or_default().as_secs();
                self.say(&format!("Idle for {secs} s; disconnecting."));
                LeaveReason::Idle
            }
        }
    }

    fn on_frame(&mut self, frame: Frame<'_>) -> ControlFlow<()> {
        let raw = match frame {
            Frame::TooLong => {
                let max = self.cfg.max_line_bytes;
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
            self.last_line = Instant::now();
            match &self.phase {
                Phase::Handshake => self.on_nick_line(line.trim()),
                Phase::Joined(nick) => {
                    let nick = nick.clone();
                    self.on_chat_line(&nick, line);
                }
            }
            if let Some(bucket) = &mut self.bucket
                && bucket.spend(Instant::now())
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
        if self.leave.is_some() || self.throttle {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn on_nick_line(&mut self, nick: &str) {
        if nick.eq_ignore_ascii_case("/quit") || nick.to_ascii_lowercase().starts_with("/quit ") {
            self.leave = Some(LeaveReason::Quit(None));
            return;
        }
        match self.hub.join(self.id(), nick) {
            Ok(nick) => {
                tracing::Span::current().record("nick", &*nick);
                self.phase = Phase::Joined(nick);
            }
            Err(NickRefused::Gone) => self.leave = Some(LeaveReason::ShuttingDown),
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
                    tracing::Span::current().record("nick", &*new);
                    self.phase = Phase::Joined(new);
                }
                Err(NickRefused::Gone) => self.leave = Some(LeaveReason::ShuttingDown),
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
                self.say("Goodbye.");
                self.leave = Some(LeaveReason::Quit(reason.map(str::to_owned)));
            }
            ClientCmd::Help => self.reply(notices(HELP.iter().copied()), HELP.len() as u32),
            ClientCmd::Usage(usage) => self.say(usage),
            ClientCmd::Unknown(name) => self.say(&format!(
                "Unknown command /{name}; type /help for the list."
            )),
        }
    }
}
