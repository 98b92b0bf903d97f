//! A session's input side: reading, framing, sanitising and handling lines, flood control, and the
//! input deadlines (handshake, idle). All synchronous; the driver in the parent module decides when
//! to call it. Reads land in a per-thread buffer: only an incomplete line (in the framer) or input
//! paused by flood control (the backlog) is ever held per connection, and neither has any capacity
//! while the client is idle.

use std::cell::RefCell;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::client::Stream;
use bytes::Bytes;
use tokio::io::Interest;
use tokio::time::Instant;

use crate::client::{Client, LeaveReason};
use crate::hub::Hub;
use crate::protocol::LineFramer;
use crate::protocol::framing::FramerState;
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
    pub(super) static LINE_BUF: RefCell<String> = RefCell::new(String::with_capacity(1024));
}

/// Reads and discards whatever is readable now; true once the peer has closed (or failed).
pub(super) fn drain(stream: &Stream) -> bool {
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
fn recv(stream: &Stream, buf: &mut [u8]) -> io::Result<usize> {
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

/// What an input side holds between reads, as plain data: moved to the next process on upgrade
/// (so a line typed across the hand-over arrives whole and flood control carries on), and kept by
/// this one if the upgrade is rolled back.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct InputState {
    framer: FramerState,
    /// Read and not yet handled (flood control held it back).
    #[serde(with = "crate::hex")]
    backlog: Vec<u8>,
    /// How much longer flood control holds it back.
    paused_ms: Option<u64>,
    bucket: Option<BucketState>,
    told_utf8: bool,
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
                room: None,
                batch: Vec::new(),
                batch_lines: 0,
                told_utf8: false,
                now: Instant::now(),
                leave: None,
                throttle: false,
                published: 0,
                congested: false,
                pending: None,
            },
            backlog: Vec::new(),
            paused_until: None,
            pause_expired: false,
            reading: true,
        }
    }

    /// Its state between reads (see [`InputState`]). Called only between reads, when nothing of
    /// a read is left unhandled but what flood control holds back.
    pub(super) fn export(&self) -> InputState {
        let now = Instant::now();
        InputState {
            framer: self.framer.export(),
            backlog: self.backlog.clone(),
            paused_ms: self
                .paused_until
                .map(|t| t.saturating_duration_since(now).as_millis() as u64),
            bucket: self.ctx.bucket.as_ref().map(|b| b.export(now)),
            told_utf8: self.ctx.told_utf8,
        }
    }

    /// An input side continuing from `state` for a client that is already registered (and joined
    /// as `nick`, if it had joined), or None if the state is inconsistent.
    pub(super) fn restore(
        hub: Arc<Hub>,
        client: Arc<Client>,
        nick: Option<Arc<str>>,
        state: InputState,
    ) -> Option<Self> {
        let mut input = Input::new(hub, client);
        input.framer = LineFramer::import(state.framer)?;
        let now = Instant::now();
        let flood = input.ctx.cfg.settings.flood;
        input.ctx.bucket = match (flood, state.bucket) {
            (Some(flood), Some(b)) => Some(TokenBucket::import(b, now, flood)),
            (flood, _) => flood.map(TokenBucket::new),
        };
        input.paused_until = state
            .paused_ms
            .map(|ms| now + Duration::from_millis(ms).min(super::flood::MAX_FLOOD_WAIT));
        input.backlog = state.backlog;
        input.ctx.told_utf8 = state.told_utf8;
        input.ctx.room = nick
            .as_ref()
            .and_then(|_| input.ctx.hub.room_of(input.ctx.client.id));
        input.ctx.phase = nick;
        Some(input)
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
    pub(super) fn read(&mut self, stream: &Stream) -> bool {
        let before = self.ctx.published;
        self.follow_config();
        READ_BUF.with_borrow_mut(|buf| match recv(stream, buf) {
            Ok(0) => {
                // Clean EOF: a last unterminated line still counts (`printf 'hi' | nc -N`).
                let ctx = &mut self.ctx;
                ctx.now = Instant::now();
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
                .set_leave(crate::client::socket_error_reason(&e), None),
        });
        self.ctx.published != before
    }

    /// Called before consuming input: while some member is congested, input is held back (the
    /// session waits on [`Congestion::until_relieved`](crate::client::Congestion)), so a burst is
    /// paced to what readers can take. Returns true if input must wait.
    pub(super) fn hold_for_congestion(&mut self) -> bool {
        !std::mem::take(&mut self.pause_expired)
            && self.ctx.room.as_ref().is_some_and(|r| r.congestion.any())
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
        ctx.now = Instant::now();
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
    pub(super) fn drain_pending(&mut self, stream: &Stream) {
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

use super::commands::LineCtx;
use super::flood::{BucketState, TokenBucket};
