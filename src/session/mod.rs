//! One client's connection, from greeting to close, as a small state machine driven by one task.
//!
//! All the work is synchronous: the input side ([`lines`]) reads into a per-thread buffer, frames and
//! sanitises lines and publishes everything one read produced as *one* shared buffer; the output side
//! drains the client's outbox with `writev`, so whatever queued up while the socket was busy goes out
//! in one syscall and a lone line goes out at once. In steady state the session awaits only one wait
//! for "socket ready for what we need, outbox has data, or a deadline passed", and a deferred yield
//! after publishing or before writing new output, so that input which is ready (other senders'
//! lines of the same burst) is published first and leaves in the same write. Reads never wait on
//! writes.
//!
//! Memory: an idle joined client holds no buffers and no timer; the task's future stays small because
//! nothing large lives across the wait (the timer is boxed and exists only while a deadline does).
//! The session ends when the outbox is closed (kick, too slow, shutdown, or our own leave after EOF,
//! `/quit` or a timeout) or the socket fails; [`Hub::leave`] is called either way and is a no-op the
//! second time, so every client's departure is announced exactly once.

mod lines;

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tracing::debug;

use crate::client::{Client, Close, Drained, LeaveReason, Taken};
use crate::hub::Hub;
use lines::Input;

/// The prompt that asks for a nickname.
pub const NICK_PROMPT: &str = "Choose a nickname:";
/// Buffers handed to one `writev()` (well under IOV_MAX).
const WRITE_SLICES: usize = 64;
/// How long a closing connection may take to finish writing, and then be read to EOF (lingering
/// close), before it is dropped.
const LINGER: Duration = Duration::from_secs(2);

/// Runs a registered client's connection to the end.
pub async fn run(hub: Arc<Hub>, client: Arc<Client>, stream: TcpStream) {
    let cfg = hub.config();
    client.outbox.push(hub.greeting(), 1, usize::MAX);
    let mut session = Session {
        input: Input::new(hub, client, cfg),
        stream,
        pending: Vec::new(),
        output_deadline: None,
        closing: false,
        timer: None,
    };
    let end = session.drive().await;
    session.finish(end).await;
}

/// How the session ended.
enum End {
    /// The outbox was closed (and, for `Flush`, fully written).
    Closed(Close),
    /// The socket failed or stalled, or the final flush took too long.
    Failed(LeaveReason),
}

struct Session {
    stream: TcpStream,
    input: Input,
    /// Buffers taken from the outbox and not yet fully written (written ones are drained away).
    pending: Vec<Bytes>,
    /// While output is blocked: when the socket will have accepted nothing for the write timeout.
    /// Once the client is leaving (`closing`): the end of the final flush, which does not move.
    output_deadline: Option<Instant>,
    closing: bool,
    /// The nearest deadline, boxed so an idle session carries no timer at all.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Session {
    fn hub(&self) -> &Hub {
        &self.input.ctx.hub
    }

    fn client(&self) -> &Client {
        &self.input.ctx.client
    }

    /// Moves data both ways until the session ends.
    async fn drive(&mut self) -> End {
        // Set after input was published: the sender then yields before anything else, so it reads
        // at most once per round of the scheduler and the recipients' sessions write in between.
        // Without it a fast sender could run a whole scheduler budget of reads and fill the queues
        // of readers that keep up.
        let mut yield_first = false;
        loop {
            if std::mem::take(&mut yield_first) {
                // Deferred (see `yield_now`): we run again only once every ready task has run and
                // the runtime has polled for new socket events. Our own output waits too, so what
                // the other senders of a burst publish meanwhile leaves in the same write.
                tokio::task::yield_now().await;
            }
            if self.client().outbox.take_drain_request() {
                // The daemon is stopping: relay what the client already sent, before the
                // shutdown notice that follows once every session has done this.
                self.input.drain_pending(&self.stream);
                self.after_input();
                self.hub().input_drained();
            }
            if let Some(end) = self.write_out() {
                return end;
            }
            // Deadlines first: the end of a flood pause is what lets the backlog below proceed.
            if let Some(end) = self.on_time(Instant::now()) {
                return end;
            }
            if !yield_first
                && self.input.has_backlog_ready()
                && !self.input.hold_for_congestion(Instant::now())
            {
                yield_first = self.input.consume_backlog();
                self.after_input();
                continue;
            }
            self.arm_timer();
            let wait = Wait {
                stream: &self.stream,
                read: self.input.wants_read(),
                write: !self.pending.is_empty(),
                outbox: &self.input.ctx.client.outbox,
                timer: &mut self.timer,
            };
            match wait.await {
                Wake::Readable => {
                    if !self.input.hold_for_congestion(Instant::now()) {
                        yield_first = self.input.read(&self.stream);
                        self.after_input();
                    }
                }
                // Output for an idle socket: write it after the input that is ready now has been
                // read and published (a close waits the same single round). Lines that arrive together from several senders (a burst)
                // then leave in one write per recipient instead of one write per line.
                Wake::Output => tokio::task::yield_now().await,
                Wake::Other => {}
                Wake::Failed => return End::Failed(LeaveReason::Closed),
            }
        }
    }

    /// If the input side decided the client leaves, tells the room now and starts the final flush.
    fn after_input(&mut self) {
        if let Some(leaving) = self.input.take_leave() {
            let id = self.client().id;
            self.hub()
                .leave_saying(id, leaving.reason, leaving.farewell);
            let limit = self.hub().config().write_timeout.min(LINGER);
            self.output_deadline = Some(Instant::now() + limit);
            self.closing = true;
        }
    }

    /// Handles passed deadlines; returns the end if one of them ends the session.
    fn on_time(&mut self, now: Instant) -> Option<End> {
        if self.output_deadline.is_some_and(|t| t <= now) {
            let reason = if self.closing {
                LeaveReason::Closed
            } else {
                LeaveReason::WriteTimeout
            };
            return Some(End::Failed(reason));
        }
        self.input.on_time(now);
        self.after_input();
        None
    }

    /// Points the timer at the nearest deadline, or drops it when there is none.
    fn arm_timer(&mut self) {
        let next = [self.output_deadline, self.input.next_deadline()]
            .into_iter()
            .flatten()
            .min();
        match (next, &mut self.timer) {
            (None, timer) => *timer = None,
            (Some(at), Some(timer)) => {
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
            }
            (Some(at), timer) => *timer = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// Writes queued output until the socket would block or nothing is left. Returns the end when
    /// the outbox is closed (after a flushing close: once everything was written) or the socket fails.
    fn write_out(&mut self) -> Option<End> {
        loop {
            if self.pending.is_empty() {
                // Hand our (empty) vector back so steady traffic reuses it; when idle it is freed.
                // (`take` also reports an abort, so only a half-written batch checks for one.)
                self.unstall();
                let spare = std::mem::take(&mut self.pending);
                match self.client().outbox.take(spare) {
                    Taken::Empty => return None,
                    Taken::Done(close) => return Some(End::Closed(close)),
                    Taken::Data(batch) => self.pending = batch,
                }
            } else if let Some(reason) = self.client().outbox.aborted() {
                // Kicked or cut off in the middle of a batch: the rest is not sent.
                return Some(End::Closed(Close::Abort(reason)));
            }
            match writev(&self.stream, &self.pending) {
                Ok(0) => return Some(End::Failed(LeaveReason::Closed)),
                Ok(n) => {
                    match self.client().outbox.sent(n) {
                        Drained::Relieved => self.hub().relieved(),
                        Drained::Congested => self.hub().draining(),
                        Drained::Normal => {}
                    }
                    let stats = &self.client().stats;
                    stats.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                    self.advance(n);
                    self.unstall();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.output_deadline.is_none() {
                        let timeout = self.hub().config().write_timeout;
                        self.output_deadline = Some(Instant::now() + timeout);
                    }
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(End::Failed(socket_error_reason(&e))),
            }
        }
    }

    /// Output made progress: the stall clock stops (a closing deadline stays).
    fn unstall(&mut self) {
        if !self.closing {
            self.output_deadline = None;
        }
    }

    /// Drops `n` written bytes from the front of the pending buffers.
    fn advance(&mut self, mut n: usize) {
        let mut done = 0;
        for buf in &mut self.pending {
            if n < buf.len() {
                buf.advance(n);
                break;
            }
            n -= buf.len();
            done += 1;
        }
        self.pending.drain(..done);
    }

    /// Leaves the room (a no-op if already gone) and closes: gracefully after a flushing close.
    async fn finish(&mut self, end: End) {
        let id = self.client().id;
        match end {
            End::Closed(Close::Flush(reason)) => {
                self.hub().leave(id, reason);
                // Boxed: the lingering close's timers need not sit in every idle session's future.
                Box::pin(linger(&self.stream)).await;
            }
            End::Closed(Close::Abort(reason)) | End::Failed(reason) => {
                self.hub().leave(id, reason);
            }
        }
        debug!(client = id, "connection closed");
    }
}

/// Why a client leaves when its socket fails: the kernel's user timeout (unacknowledged data, or a
/// zero window, for too long) is a write timeout; anything else is the connection closing.
pub(super) fn socket_error_reason(e: &io::Error) -> LeaveReason {
    if e.kind() == io::ErrorKind::TimedOut {
        LeaveReason::WriteTimeout
    } else {
        LeaveReason::Closed
    }
}

/// One `writev()` of up to [`WRITE_SLICES`] buffers. Synchronous, so the slice array lives on the
/// thread's stack and never in the session's future.
fn writev(stream: &TcpStream, bufs: &[Bytes]) -> io::Result<usize> {
    let mut slices = [IoSlice::new(&[]); WRITE_SLICES];
    let n = bufs.len().min(WRITE_SLICES);
    for (slot, buf) in slices.iter_mut().zip(bufs) {
        *slot = IoSlice::new(buf);
    }
    stream.try_write_vectored(&slices[..n])
}

/// What ended a [`Wait`].
enum Wake {
    /// The socket has input (or EOF) to read.
    Readable,
    /// The outbox has news (new output, or a close) while the socket had nothing pending.
    Output,
    /// Something else: output possible, an outbox close or drain request, or a deadline.
    Other,
    /// The socket failed.
    Failed,
}

/// The session's one wait point: socket readiness for what it needs, new output (or, while the
/// socket is full, only a close), or the nearest deadline. Written by hand rather
/// than with `select!` over `TcpStream::ready()`: the readiness wakers then live in the socket's own
/// slots (`poll_read_ready`/`poll_write_ready`), so the future is a handful of references and an
/// idle connection's task stays small.
struct Wait<'a> {
    stream: &'a TcpStream,
    read: bool,
    write: bool,
    outbox: &'a crate::client::Outbox,
    timer: &'a mut Option<Pin<Box<Sleep>>>,
}

impl Future for Wait<'_> {
    type Output = Wake;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Wake> {
        let this = &mut *self;
        if this.read {
            match this.stream.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Wake::Readable),
                Poll::Ready(Err(_)) => return Poll::Ready(Wake::Failed),
                Poll::Pending => {}
            }
        }
        if this.write {
            match this.stream.poll_write_ready(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Wake::Other),
                Poll::Ready(Err(_)) => return Poll::Ready(Wake::Failed),
                Poll::Pending => {}
            }
        }
        // While the socket is full, more output is no news; only a close (an abort) is.
        let mut outbox = if this.write {
            this.outbox.closed()
        } else {
            this.outbox.ready()
        };
        if Pin::new(&mut outbox).poll(cx).is_ready() {
            return Poll::Ready(if this.write {
                Wake::Other
            } else {
                Wake::Output
            });
        }
        if let Some(timer) = this.timer.as_mut()
            && timer.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Wake::Other);
        }
        Poll::Pending
    }
}

/// Half-closes the connection and reads (discarding) until the peer closes or [`LINGER`] passes, so
/// the last lines we sent are not destroyed by a reset caused by input the peer sent meanwhile.
async fn linger(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    if nix::sys::socket::shutdown(stream.as_raw_fd(), nix::sys::socket::Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    while let Ok(Ok(())) = tokio::time::timeout_at(deadline, stream.readable()).await {
        if lines::drain(stream) {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// The per-connection task must stay small: it is most of an idle connection's memory.
    #[test]
    fn session_future_is_small() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let stream = TcpStream::connect(addr).await.unwrap();
            let hub = Arc::new(Hub::new(Arc::new(Config::default())));
            let client = hub.register(addr).unwrap();
            let size = std::mem::size_of_val(&run(hub, client, stream));
            // 520 bytes when this was written. tokio rounds its task cell up to 128-byte steps, and with
            // its header and trailer this future keeps the cell at 640 bytes; more would cost 768.
            assert!(size <= 520, "session future is {size} bytes");
        });
    }
}
