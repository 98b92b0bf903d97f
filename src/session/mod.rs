//! One client's connection, from greeting to close, as a small state machine driven by one task.
//!
//! The session reads: the input side ([`lines`]) reads into a per-thread buffer, frames and
//! sanitises lines and publishes everything one read produced as *one* shared buffer, and the
//! hub then writes it to every member's socket from this task (see `client::outbox`). So the
//! session writes its own client's output only when it was handed over: the socket was full when
//! someone else tried, or the connection is closing. In steady state it awaits one wait for
//! "socket readable (or writable while it owns output), doorbell rung, congestion relieved, or a
//! deadline passed". Reads never wait on writes.
//!
//! Memory: an idle joined client holds no buffers and no timer; the task's future stays small
//! because nothing large lives across the wait (timers and the congestion wait are boxed and exist
//! only while needed). The session ends when the client's output is closed and written (by
//! [`Hub::close`], whoever called it) or the socket fails; in the latter case it closes the client
//! itself, which announces the leave unless someone else closed it first.

mod commands;
pub(crate) mod flood;
mod lines;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::client::Stream;
use tokio::time::{Instant, Sleep};
use tracing::debug;

use crate::client::{Client, Close, Flushed, LeaveReason, Limits, Outbox};
use crate::hub::Hub;
use lines::Input;

/// How long a closing connection may take to finish writing, and then be read to EOF (lingering
/// close), before it is dropped.
const LINGER: Duration = Duration::from_secs(2);

pub(crate) use lines::InputState;

/// How a session stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The client left (or was closed): the connection is over.
    Left,
    /// Frozen for an upgrade: the connection lives on, in another process or a resumed session.
    Frozen,
}

/// Runs a registered client's connection to the end (or until an upgrade freezes it).
pub async fn run(hub: Arc<Hub>, client: Arc<Client>) -> Exit {
    // Built inside the future, not passed to it: an async fn keeps its arguments apart from its
    // locals, so a session passed in would take its space twice in every connection's task.
    let input = Input::new(hub, client.clone());
    Session::new(client, input).serve().await
}

/// Runs a connection taken over from a frozen session (an upgrade, or its rollback) from the
/// input state that session gave up; `nick` is the client's nickname if it had joined.
pub(crate) async fn resume(
    hub: Arc<Hub>,
    client: Arc<Client>,
    nick: Option<Arc<str>>,
    state: Box<InputState>,
) -> Exit {
    let input = match Input::restore(hub.clone(), client.clone(), nick.clone(), *state) {
        Some(input) => input,
        None => {
            // Checked when the snapshot was read, so this is a bug, not bad input: keep the
            // client and lose only its half-typed line.
            tracing::warn!(
                client = client.id,
                "inconsistent input state; starting afresh"
            );
            let mut input = Input::new(hub, client.clone());
            input.ctx.room = nick.as_ref().and_then(|_| input.ctx.hub.room_of(client.id));
            input.ctx.phase = nick;
            input
        }
    };
    Session::new(client, input).serve().await
}

/// How the session ended.
enum End {
    /// The client was closed (and, for `Flush`, its last output written).
    Closed(Close),
    /// The socket failed or stalled, or the final flush took too long.
    Failed(LeaveReason),
    /// Frozen for an upgrade: the input state was handed over and the connection is left as it is.
    Frozen,
}

/// A wait that holds input back: for congestion to end (nothing to do after), or for the
/// cluster's answer to a line (what finishes that line).
type Pause = Pin<Box<dyn Future<Output = Option<commands::Resume>> + Send>>;

struct Session {
    /// The same client as the input side's, held here too so the socket can be borrowed while
    /// the input side is mutated.
    client: Arc<Client>,
    input: Input,
    /// While this session owns output and the socket is full: when it will have accepted nothing
    /// for the write timeout. Once the client is leaving (`closing`): the end of the final flush,
    /// which does not move.
    output_deadline: Option<Instant>,
    closing: bool,
    /// The nearest deadline, boxed so an idle session carries no timer at all.
    timer: Option<Pin<Box<Sleep>>>,
    /// A sender's wait for congestion in the room to end; boxed, and only while paused.
    pause: Option<Pause>,
}

impl Session {
    fn new(client: Arc<Client>, input: Input) -> Session {
        Session {
            input,
            client,
            output_deadline: None,
            closing: false,
            timer: None,
            pause: None,
        }
    }

    async fn serve(&mut self) -> Exit {
        match self.drive().await {
            // The connection now belongs to another process, or to a resumed session.
            End::Frozen => Exit::Frozen,
            end => {
                self.finish(end).await;
                Exit::Left
            }
        }
    }

    fn hub(&self) -> &Hub {
        &self.input.ctx.hub
    }

    fn client(&self) -> &Client {
        &self.client
    }

    fn outbox(&self) -> &Outbox {
        &self.client.outbox
    }

    /// Moves data both ways until the session ends.
    async fn drive(&mut self) -> End {
        // The greeting was queued at registration.
        self.client.flush(self.limits());
        loop {
            // A flusher that had to stop may have handed a room's delivery to this session, and
            // what this worker appended may have waited long enough.
            let requests = self.outbox().take_requests();
            if let Some(room) = &requests.owed {
                self.input.ctx.hub.carry_on(room);
                // A big room's round goes on in turns (see `hub::deliver`): let the tasks
                // waiting meanwhile (the accept loop, readers) have theirs before the next one.
                // Fairness only: nothing is lost or reordered however the scheduler orders us.
                tokio::task::yield_now().await;
            }
            crate::hub::deliver_overdue();
            if let Some(ticket) = requests.drain {
                // The daemon is stopping: relay what the client already sent, before the
                // shutdown notice that follows once every session has done this.
                self.input.drain_pending(&self.client.stream);
                self.after_input();
                drop(ticket);
            }
            if let Some(reason) = requests.failure {
                return End::Failed(reason);
            }
            if let Some(request) = self.outbox().take_freeze() {
                // Between reads: what the client sent is either handled or held back whole.
                request.give(self.client.id, self.input.export());
                return End::Frozen;
            }
            if (self.outbox().is_parked() || self.outbox().is_closing())
                && let Some(end) = self.write_out()
            {
                return end;
            }
            if let Some(end) = self.on_time(Instant::now()) {
                return end;
            }
            if self.pause.is_none() && self.input.has_backlog_ready() {
                if self.input.hold_for_congestion() {
                    self.start_pause();
                } else {
                    self.input.consume_backlog();
                    self.after_input();
                    continue;
                }
            }
            self.arm_timer();
            let wait = Wait {
                stream: &self.client.stream,
                read: self.pause.is_none() && self.input.wants_read(),
                write: self.client.outbox.is_parked(),
                outbox: &self.client.outbox,
                timer: &mut self.timer,
                pause: &mut self.pause,
            };
            match wait.await {
                Wake::Readable => {
                    if self.input.hold_for_congestion() {
                        self.start_pause();
                    } else {
                        self.input.read(&self.client.stream);
                        self.after_input();
                    }
                }
                Wake::Relieved(Some(resume)) => {
                    // The cluster answered: finish the line that asked, then read on.
                    self.pause = None;
                    resume(&mut self.input.ctx);
                    self.after_input();
                }
                Wake::Relieved(None) => {
                    // Whatever ended the pause, the next read goes ahead (a stalled reader
                    // cannot hold the room); if the room is still congested it pauses again.
                    self.pause = None;
                    self.input.pause_expired = true;
                }
                Wake::Other => {}
                Wake::Failed => return End::Failed(LeaveReason::Closed),
            }
        }
    }

    /// What judging this client's lag needs, as of now.
    fn limits(&self) -> Limits<'_> {
        let limit = self.input.ctx.cfg.settings.max_queue_bytes;
        match &self.input.ctx.room {
            Some(room) => room.limits(room.log_end(), limit),
            None => self.hub().roomless_limits(limit),
        }
    }

    fn start_pause(&mut self) {
        if let Some(room) = &self.input.ctx.room {
            let congestion = room.congestion.clone();
            self.pause = Some(Box::pin(async move {
                congestion.until_relieved().await;
                None
            }));
        }
    }

    /// After input was handled: a publish into a congested room pauses reading; a decision to
    /// leave closes the client now (the room hears of it) and starts the final flush.
    fn after_input(&mut self) {
        if let Some(pending) = self.input.ctx.pending.take() {
            self.pause = Some(Box::pin(async move { Some(pending.await) }));
        }
        if self.input.take_congested() && self.pause.is_none() {
            self.start_pause();
        }
        if let Some(leaving) = self.input.take_leave() {
            let id = self.client().id;
            self.hub().close(id, leaving.reason, leaving.farewell);
            self.begin_closing();
        }
    }

    /// The final flush has a fixed deadline.
    fn begin_closing(&mut self) {
        if !self.closing {
            self.closing = true;
            let limit = self.input.ctx.cfg.settings.write_timeout.min(LINGER);
            self.output_deadline = Some(Instant::now() + limit);
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

    /// Writes the output this session owns (the socket was full, or the client is closing).
    /// Returns the end once the client's output is closed and written, or the socket failed.
    fn write_out(&mut self) -> Option<End> {
        let client = &self.client;
        let before = client.stats.bytes_out.load(Ordering::Relaxed);
        let limits = self.limits();
        let outcome = client.flush_own(limits);
        let progressed = client.stats.bytes_out.load(Ordering::Relaxed) != before;
        match outcome {
            Flushed::Idle => {
                self.unstall();
                None
            }
            Flushed::Parked => {
                if progressed {
                    self.unstall();
                }
                if self.output_deadline.is_none() {
                    let timeout = self.input.ctx.cfg.settings.write_timeout;
                    self.output_deadline = Some(Instant::now() + timeout);
                }
                None
            }
            Flushed::Done(close) => Some(End::Closed(close)),
            Flushed::Failed(reason) => Some(End::Failed(reason)),
        }
    }

    /// Output made progress: the stall clock stops (a closing deadline stays).
    fn unstall(&mut self) {
        if !self.closing {
            self.output_deadline = None;
        }
    }

    /// Ends the connection: gracefully (lingering) after a flushing close; a failure closes the
    /// client (announced unless someone else closed it first).
    async fn finish(&mut self, end: End) {
        let id = self.client().id;
        match end {
            End::Closed(Close::Flush(_)) => {
                // Boxed: the lingering close's timers need not sit in every idle session's future.
                Box::pin(linger(&self.client.stream)).await;
            }
            End::Closed(Close::Abort(_)) | End::Frozen => {}
            End::Failed(reason) => {
                self.hub().close(id, reason, None);
            }
        }
        debug!(client = id, "connection closed");
    }
}

/// What ended a [`Wait`].
enum Wake {
    /// The socket has input (or EOF) to read.
    Readable,
    /// The pause ended (with what finishes a line, if it was the cluster's answer).
    Relieved(Option<commands::Resume>),
    /// Something else: the socket writable, the doorbell, or a deadline.
    Other,
    /// The socket failed.
    Failed,
}

/// The session's one wait point. Written by hand rather than with `select!` over
/// `TcpStream::ready()`: the readiness wakers then live in the socket's own slots
/// (`poll_read_ready`/`poll_write_ready`), so the future is a handful of references and an idle
/// connection's task stays small.
struct Wait<'a> {
    stream: &'a Stream,
    read: bool,
    write: bool,
    outbox: &'a Outbox,
    timer: &'a mut Option<Pin<Box<Sleep>>>,
    pause: &'a mut Option<Pause>,
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
        if this.outbox.poll_doorbell(cx).is_ready() {
            return Poll::Ready(Wake::Other);
        }
        if let Some(pause) = this.pause.as_mut()
            && let Poll::Ready(resume) = pause.as_mut().poll(cx)
        {
            return Poll::Ready(Wake::Relieved(resume));
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
async fn linger(stream: &Stream) {
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
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let hub = Arc::new(Hub::new(Config::default()));
            let client = hub.register(addr, stream).unwrap();
            let size = std::mem::size_of_val(&run(hub, client));
            // 520 bytes when this was written. tokio rounds its task cell up to 128-byte steps, and with
            // its header and trailer this future keeps the cell at 640 bytes; more would cost 768.
            assert!(size <= 520, "session future is {size} bytes");
        });
    }
}
