//! One connection as the rest of the daemon sees it: identity, counters, and its outbound queue.
//!
//! The [`Outbox`] is the only path from the daemon to a client's socket. Anyone (the hub's fan-out, the
//! client's own session, the admin socket) pushes shared [`Bytes`] into it without ever waiting; the
//! session's writer drains it. It is bounded in *bytes*: a push that would take the unsent total past the
//! limit is refused and the caller disconnects the client as too slow, so a stalled reader costs at most
//! `max_queue_bytes` and never delays anyone else. An idle outbox owns no heap memory.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Instant, SystemTime};

use bytes::Bytes;

/// A connection's id: unique for the daemon's lifetime, never reused, never a socket address.
pub type ClientId = u64;

/// Why a client left the room. Its `Display` is the text others see in `*** alice left (…)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaveReason {
    /// The client sent `/quit`, with an optional reason.
    Quit(Option<String>),
    /// The peer closed or reset the connection.
    Closed,
    /// An operator kicked the client, with an optional reason.
    Kicked(Option<String>),
    /// The client's send queue overflowed.
    QueueFull,
    /// The client's socket accepted nothing for the write timeout.
    WriteTimeout,
    /// No line from the client within the idle timeout.
    Idle,
    /// No valid nickname within the handshake timeout.
    HandshakeTimeout,
    /// The daemon is stopping.
    ShuttingDown,
}

impl LeaveReason {
    /// A short stable word for logs and metrics (`reason=kicked`).
    pub fn kind(&self) -> &'static str {
        match self {
            LeaveReason::Quit(_) => "quit",
            LeaveReason::Closed => "closed",
            LeaveReason::Kicked(_) => "kicked",
            LeaveReason::QueueFull | LeaveReason::WriteTimeout => "too_slow",
            LeaveReason::Idle => "idle",
            LeaveReason::HandshakeTimeout => "handshake_timeout",
            LeaveReason::ShuttingDown => "shutdown",
        }
    }
}

impl std::fmt::Display for LeaveReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaveReason::Quit(None) => f.write_str("quit"),
            LeaveReason::Quit(Some(r)) => write!(f, "quit: {r}"),
            LeaveReason::Closed => f.write_str("connection closed"),
            LeaveReason::Kicked(None) => f.write_str("kicked"),
            LeaveReason::Kicked(Some(r)) => write!(f, "kicked: {r}"),
            LeaveReason::QueueFull => f.write_str("too slow: send queue full"),
            LeaveReason::WriteTimeout => f.write_str("too slow: write timeout"),
            LeaveReason::Idle => f.write_str("idle timeout"),
            LeaveReason::HandshakeTimeout => f.write_str("no nickname in time"),
            LeaveReason::ShuttingDown => f.write_str("server shutting down"),
        }
    }
}

/// How the session should end once its outbox is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Close {
    /// Deliver what is queued (a kick notice, a goodbye, the shutdown line), then close.
    Flush(LeaveReason),
    /// Close now, dropping what is queued: the client is not reading, so flushing would only wait.
    Abort(LeaveReason),
}

impl Close {
    /// The mode a reason implies: a client that is not reading is not waited for.
    pub fn for_reason(reason: LeaveReason) -> Close {
        match reason {
            LeaveReason::QueueFull | LeaveReason::WriteTimeout => Close::Abort(reason),
            other => Close::Flush(other),
        }
    }

    /// The reason carried by either mode.
    pub fn reason(&self) -> &LeaveReason {
        match self {
            Close::Flush(r) | Close::Abort(r) => r,
        }
    }
}

/// What became of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for the writer.
    Queued,
    /// Queued, and this push took the queue past half its limit: the client is now congested, and
    /// senders should pause until it drains (the hub counts congested clients).
    Congested,
    /// Refused: the unsent total would pass the limit. The caller must disconnect the client.
    Overflow,
    /// The outbox is already closing; the bytes were dropped on purpose.
    Closed,
}

/// What a write did to a client's congestion (see [`Pushed::Congested`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// The client was not congested.
    Normal,
    /// Still congested, but making progress (paused senders wait on for it).
    Congested,
    /// The queue drained to half its limit: no longer congested.
    Relieved,
}

/// Per-client traffic counters, read by the admin socket without taking any lock.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Lines received from the client (non-empty, after sanitising).
    pub lines_in: AtomicU64,
    /// Bytes received from the client, as read from the socket.
    pub bytes_in: AtomicU64,
    /// Bytes written to the client's socket.
    pub bytes_out: AtomicU64,
    /// When the client last sent a line, in milliseconds since it connected.
    pub last_active_ms: AtomicU64,
}

#[derive(Debug, Default)]
struct OutboxState {
    queue: Vec<Bytes>,
    /// Pushed but not yet written to the socket (queued here or in the writer's hands).
    unsent: usize,
    /// Lines ever queued (counted here because the pusher already holds this lock).
    lines_out: u64,
    close: Option<Close>,
    /// The session's waker while it waits (see [`Outbox::ready`]).
    waker: Option<Waker>,
    /// Whether that waiter wants to hear about pushes, or only about a close.
    waker_wants_data: bool,
    /// Set by [`Outbox::request_drain`]: the next wait returns at once, and the session relays its
    /// client's pending input before the stop (taken once, by the session or by the hub's leave).
    drain_requested: bool,
    /// Half the queue limit: above it the client counts as congested (see [`Pushed::Congested`]).
    soft: usize,
    congested: bool,
}

/// A bounded, byte-counted queue of shared buffers with a wake-up for the writer.
///
/// The wake-up is a stored [`Waker`] under the same lock as the queue rather than a
/// `tokio::sync::Notify`: the waiting future is then one reference (idle sessions stay small), and a
/// push wakes the session only when it is actually waiting.
#[derive(Debug, Default)]
pub struct Outbox {
    state: Mutex<OutboxState>,
}

/// A batch the writer took from the outbox, or the instruction to stop.
#[derive(Debug)]
pub enum Taken {
    /// Buffers to write, in order.
    Data(Vec<Bytes>),
    /// Nothing queued; wait for [`Outbox::ready`].
    Empty,
    /// Stop writing: closed in `Abort` mode, or closed in `Flush` mode with nothing left to send.
    Done(Close),
}

impl Outbox {
    /// Queues `buf` unless the unsent total would exceed `limit`. A single buffer larger than the
    /// limit is still admitted into an empty queue, so a big but legitimate reply (`/who` in a huge
    /// room) cannot by itself mark a client as slow.
    /// `lines` is how many lines `buf` holds, for the client's counters.
    pub fn push(&self, buf: Bytes, lines: u32, limit: usize) -> Pushed {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.close.is_some() {
            return Pushed::Closed;
        }
        if st.unsent > 0 && st.unsent + buf.len() > limit {
            return Pushed::Overflow;
        }
        st.unsent += buf.len();
        st.lines_out += u64::from(lines);
        st.queue.push(buf);
        // Pushes without a limit (the client's own replies) neither move the mark nor congest.
        let mut pushed = Pushed::Queued;
        if limit != usize::MAX {
            st.soft = limit / 2;
            if !st.congested && st.unsent > st.soft {
                st.congested = true;
                pushed = Pushed::Congested;
            }
        }
        let waker = if st.waker_wants_data {
            st.waker.take()
        } else {
            None
        };
        drop(st);
        if let Some(waker) = waker {
            waker.wake();
        }
        pushed
    }

    /// Closes the outbox. The first close wins; later ones are ignored (the leave reason is decided once),
    /// except that an `Abort` upgrades a pending `Flush`. Returns true if the client was congested
    /// (it no longer counts as such).
    pub fn close(&self, how: Close) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let was_congested = std::mem::take(&mut st.congested);
        match (&st.close, &how) {
            (None, _) => st.close = Some(how),
            (Some(Close::Flush(r)), Close::Abort(_)) => st.close = Some(Close::Abort(r.clone())),
            _ => {}
        }
        let waker = st.waker.take();
        drop(st);
        if let Some(waker) = waker {
            waker.wake();
        }
        was_congested
    }

    /// True once [`close`](Self::close) has been called.
    pub fn is_closed(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .close
            .is_some()
    }

    /// Takes everything queued, swapping in `spare` (an empty vector whose capacity is reused).
    pub fn take(&self, spare: Vec<Bytes>) -> Taken {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &st.close {
            Some(c @ Close::Abort(_)) => return Taken::Done(c.clone()),
            Some(c) if st.queue.is_empty() => return Taken::Done(c.clone()),
            _ => {}
        }
        if st.queue.is_empty() {
            // Going idle: release the queue's capacity so an idle client holds no buffers.
            st.queue = Vec::new();
            return Taken::Empty;
        }
        Taken::Data(std::mem::replace(&mut st.queue, spare))
    }

    /// Records that `n` bytes reached the socket, and says what that did to the client's congestion.
    pub fn sent(&self, n: usize) -> Drained {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.unsent = st.unsent.saturating_sub(n);
        if !st.congested {
            Drained::Normal
        } else if st.unsent <= st.soft {
            st.congested = false;
            Drained::Relieved
        } else {
            Drained::Congested
        }
    }

    /// The reason, if the outbox was closed in `Abort` mode (the writer checks this between writes).
    pub fn aborted(&self) -> Option<LeaveReason> {
        match &self.state.lock().unwrap_or_else(|e| e.into_inner()).close {
            Some(Close::Abort(reason)) => Some(reason.clone()),
            _ => None,
        }
    }

    /// Bytes pushed but not yet written.
    pub fn unsent(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).unsent
    }

    /// Lines ever queued for this client.
    pub fn lines_out(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lines_out
    }

    /// Resolves once something is queued or the outbox is closed. Cancel-safe; only one task (the
    /// client's session) waits on an outbox.
    pub fn ready(&self) -> OutboxReady<'_> {
        OutboxReady {
            outbox: self,
            data: true,
        }
    }

    /// Asks the session to relay what its client already sent (the daemon is stopping), waking it.
    pub fn request_drain(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.drain_requested = true;
        let waker = st.waker.take();
        drop(st);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Takes the drain request, if any: true exactly once after [`request_drain`](Self::request_drain).
    pub fn take_drain_request(&self) -> bool {
        std::mem::take(
            &mut self
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain_requested,
        )
    }

    /// Resolves once the outbox is closed. A session whose socket is full waits on this rather than
    /// [`ready`](Self::ready), so further pushes do not wake it in vain.
    pub fn closed(&self) -> OutboxReady<'_> {
        OutboxReady {
            outbox: self,
            data: false,
        }
    }
}

/// The future returned by [`Outbox::ready`] and [`Outbox::closed`].
#[derive(Debug)]
pub struct OutboxReady<'a> {
    outbox: &'a Outbox,
    data: bool,
}

impl Future for OutboxReady<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.outbox.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.close.is_some() || st.drain_requested || (self.data && !st.queue.is_empty()) {
            return Poll::Ready(());
        }
        st.waker_wants_data = self.data;
        match &mut st.waker {
            Some(waker) => waker.clone_from(cx.waker()),
            None => st.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// A connected client, shared between its session, the hub and the admin socket.
#[derive(Debug)]
pub struct Client {
    /// The connection's id.
    pub id: ClientId,
    /// The remote address.
    pub peer: SocketAddr,
    /// Wall-clock connection time, for display.
    pub connected_at: SystemTime,
    /// Monotonic connection time, for durations.
    pub connected: Instant,
    /// The outbound queue.
    pub outbox: Outbox,
    /// Traffic counters.
    pub stats: ClientStats,
}

impl Client {
    /// A new client that has just connected.
    pub fn new(id: ClientId, peer: SocketAddr) -> Self {
        Client {
            id,
            peer,
            connected_at: SystemTime::now(),
            connected: Instant::now(),
            outbox: Outbox::default(),
            stats: ClientStats::default(),
        }
    }

    /// Records activity (a line received) for the idle column of `chatctl list`.
    pub fn touch(&self) {
        let ms = self.connected.elapsed().as_millis() as u64;
        self.stats.last_active_ms.store(ms, Ordering::Relaxed);
    }

    /// How long since the client last sent a line (or connected).
    pub fn idle_for(&self) -> std::time::Duration {
        let last = self.stats.last_active_ms.load(Ordering::Relaxed);
        self.connected
            .elapsed()
            .saturating_sub(std::time::Duration::from_millis(last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn push_take_preserves_order_and_counts_unsent() {
        let o = Outbox::default();
        assert_eq!(o.push(b("one\r\n"), 1, 100), Pushed::Queued);
        assert_eq!(o.push(b("two\r\n"), 1, 100), Pushed::Queued);
        assert_eq!(o.unsent(), 10);
        let Taken::Data(v) = o.take(Vec::new()) else {
            panic!("expected data")
        };
        assert_eq!(v, vec![b("one\r\n"), b("two\r\n")]);
        assert!(matches!(o.take(Vec::new()), Taken::Empty));
        o.sent(10);
        assert_eq!(o.unsent(), 0);
    }

    #[test]
    fn overflow_is_by_bytes_and_oversized_single_buffer_fits_empty_queue() {
        let o = Outbox::default();
        assert_ne!(o.push(Bytes::from(vec![b'x'; 50]), 1, 10), Pushed::Overflow);
        assert_eq!(o.push(b("y"), 1, 10), Pushed::Overflow);
        let o = Outbox::default();
        assert_ne!(o.push(Bytes::from(vec![b'x'; 6]), 1, 10), Pushed::Overflow);
        assert_ne!(o.push(Bytes::from(vec![b'x'; 4]), 1, 10), Pushed::Overflow);
        assert_eq!(o.push(b("z"), 1, 10), Pushed::Overflow);
    }

    #[test]
    fn flush_close_drains_first_abort_does_not() {
        let o = Outbox::default();
        o.push(b("bye\r\n"), 1, 100);
        o.close(Close::Flush(LeaveReason::Closed));
        assert_eq!(o.push(b("late\r\n"), 1, 100), Pushed::Closed);
        assert!(matches!(o.take(Vec::new()), Taken::Data(v) if v.len() == 1));
        assert!(matches!(
            o.take(Vec::new()),
            Taken::Done(Close::Flush(LeaveReason::Closed))
        ));

        let o = Outbox::default();
        o.push(b("queued\r\n"), 1, 100);
        o.close(Close::Flush(LeaveReason::Closed));
        o.close(Close::Abort(LeaveReason::QueueFull));
        // The first reason is kept; only the mode is upgraded.
        assert!(matches!(
            o.take(Vec::new()),
            Taken::Done(Close::Abort(LeaveReason::Closed))
        ));
    }

    #[test]
    fn ready_wakes_on_push_closed_only_on_close() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::Wake;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let o = Outbox::default();

        let mut f = std::pin::pin!(o.ready());
        assert!(f.as_mut().poll(&mut cx).is_pending());
        o.push(b("x"), 1, 100);
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "a push wakes a data waiter"
        );
        assert!(f.as_mut().poll(&mut cx).is_ready());

        let mut g = std::pin::pin!(o.closed());
        assert!(
            g.as_mut().poll(&mut cx).is_pending(),
            "queued data does not satisfy closed()"
        );
        o.push(b("y"), 1, 100);
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "a push does not wake a close waiter"
        );
        o.close(Close::Abort(LeaveReason::QueueFull));
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert!(g.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn congestion_starts_past_half_the_limit_and_ends_when_drained() {
        let o = Outbox::default();
        assert_eq!(o.push(Bytes::from(vec![b'x'; 50]), 1, 100), Pushed::Queued);
        assert_eq!(
            o.push(Bytes::from(vec![b'x'; 10]), 1, 100),
            Pushed::Congested
        );
        assert_eq!(
            o.push(Bytes::from(vec![b'x'; 10]), 1, 100),
            Pushed::Queued,
            "counted once"
        );
        assert_eq!(o.push(b("reply"), 1, usize::MAX), Pushed::Queued);
        assert_eq!(
            o.sent(10),
            Drained::Congested,
            "still above half, but draining"
        );
        assert_eq!(
            o.sent(30),
            Drained::Relieved,
            "drained to half: no longer congested"
        );
        assert_eq!(o.sent(1), Drained::Normal);
        assert!(!o.close(Close::Flush(LeaveReason::Closed)));
        let o = Outbox::default();
        o.push(Bytes::from(vec![b'x'; 60]), 1, 100);
        assert!(
            o.close(Close::Abort(LeaveReason::QueueFull)),
            "closing a congested client says so"
        );
    }

    #[test]
    fn leave_reason_texts() {
        let cases = [
            (LeaveReason::Quit(None), "quit"),
            (LeaveReason::Quit(Some("bye".into())), "quit: bye"),
            (LeaveReason::Closed, "connection closed"),
            (LeaveReason::Kicked(Some("spam".into())), "kicked: spam"),
            (LeaveReason::QueueFull, "too slow: send queue full"),
            (LeaveReason::WriteTimeout, "too slow: write timeout"),
            (LeaveReason::Idle, "idle timeout"),
            (LeaveReason::ShuttingDown, "server shutting down"),
        ];
        for (r, text) in cases {
            assert_eq!(r.to_string(), text);
        }
    }
}
