//! One connection's receiving side: reads, splits lines, accounts for markers.
//!
//! Each read drains the socket into one large buffer per worker thread (borrowed only within a
//! poll), so a busy receiver gets many lines per syscall and a swarm of
//! thousands does not pay a large buffer per connection. The reader keeps its own [`Tally`]; the
//! only things it shares are milestone events and a progress counter.

use std::cell::RefCell;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::lockstep::Lockstep;
use crate::marker::{self, LineSplitter, Marker};
use crate::stats::Tally;

/// Bytes asked for per read(): large, so a busy receiver drains many lines per syscall.
const READ_BUF: usize = 256 * 1024;
/// Longest partial line a reader keeps between reads.
const MAX_LINE: usize = 64 * 1024;

/// A milestone reported by a reader.
#[derive(Debug)]
pub enum Event {
    /// The connection received its first complete line.
    FirstLine(usize),
    /// The connection saw a readiness probe of this round (reported when the round grows).
    Probe(usize, u32),
    /// The connection's tally is complete: nothing more is awaited.
    Done(usize),
    /// The server closed the connection (EOF or error).
    Closed(usize),
}

impl Event {
    /// The connection it is about.
    pub fn conn(&self) -> usize {
        match *self {
            Event::FirstLine(i) | Event::Probe(i, _) | Event::Done(i) | Event::Closed(i) => i,
        }
    }
}

/// Milestones one reader has already reported, so each is reported once.
#[derive(Default)]
struct Seen {
    any_line: bool,
    probe: Option<u32>,
    done: bool,
}

thread_local! {
    static READ_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_BUF]);
}

/// One connection's receiving side.
pub struct Reader {
    id: usize,
    tally: Tally,
    events: mpsc::UnboundedSender<Event>,
    progress: Arc<AtomicU64>,
    lockstep: Option<Arc<Lockstep>>,
    base: Instant,
}

impl Reader {
    /// The reader of connection `id`, accounting into `tally` (and its data deliveries into
    /// `lockstep`, if any); times are measured from `base`.
    pub fn new(
        id: usize,
        tally: Tally,
        events: mpsc::UnboundedSender<Event>,
        progress: Arc<AtomicU64>,
        lockstep: Option<Arc<Lockstep>>,
        base: Instant,
    ) -> Reader {
        Reader {
            id,
            tally,
            events,
            progress,
            lockstep,
            base,
        }
    }

    /// Reads until cancelled, EOF or an error, accounting for every marker; returns the tally.
    pub async fn run(mut self, mut rd: OwnedReadHalf, cancel: CancellationToken) -> Tally {
        let mut lines = LineSplitter::new(MAX_LINE);
        let mut seen = Seen::default();
        // Created once, not once per read: each new wait registers with the token under its lock.
        let mut cancelled = std::pin::pin!(cancel.cancelled());
        loop {
            if !seen.done && self.tally.complete() {
                seen.done = true;
                self.report(Event::Done(self.id));
            }
            let read = tokio::select! {
                biased;
                _ = &mut cancelled => break,
                read = poll_fn(|cx| self.poll_read(cx, &mut rd, &mut lines, &mut seen)) => read,
            };
            if read.is_err() {
                self.report(Event::Closed(self.id));
                break;
            }
        }
        self.tally
    }

    /// Waits for input and reads it once, accounting for what arrived; Err on EOF or an error.
    /// `poll_read` (rather than readiness plus `try_read`) clears the socket's readiness after a
    /// short read, so a drained socket costs no extra read that would only say "would block". The
    /// buffer is borrowed only within one poll, so one per worker thread serves every connection:
    /// a big swarm does not pay READ_BUF bytes per connection.
    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        rd: &mut OwnedReadHalf,
        lines: &mut LineSplitter,
        seen: &mut Seen,
    ) -> Poll<Result<(), ()>> {
        READ_BUFFER.with_borrow_mut(|buf| {
            let mut filled = ReadBuf::new(buf);
            match ready!(Pin::new(rd).poll_read(cx, &mut filled)) {
                Ok(()) if !filled.filled().is_empty() => {
                    self.take(filled.filled(), lines, seen);
                    Poll::Ready(Ok(()))
                }
                Ok(()) | Err(_) => Poll::Ready(Err(())),
            }
        })
    }

    /// Accounts for one read's bytes and reports any milestone they reached.
    fn take(&mut self, bytes: &[u8], lines: &mut LineSplitter, seen: &mut Seen) {
        // One clock reading per read: every line in it had arrived by now.
        let now_us = self.base.elapsed().as_micros() as u64;
        let tally = &mut self.tally;
        let delivered_before = tally.counts.delivered;
        tally.counts.received_bytes += bytes.len() as u64;
        let mut saw_line = false;
        let mut newest_probe = seen.probe;
        lines.feed(bytes, |line| {
            saw_line = true;
            match marker::find(line) {
                Some(Marker::Data {
                    sender,
                    seq,
                    sent_us,
                }) => tally.on_data(sender, seq, sent_us, now_us),
                Some(Marker::End { sender, .. }) => tally.on_end(sender),
                Some(Marker::Probe { round }) => newest_probe = newest_probe.max(Some(round)),
                // Join notices, prompts, anything else: not ours, not counted.
                None => {}
            }
        });
        if self.tally.counts.delivered != delivered_before {
            self.progress.fetch_add(1, Ordering::Relaxed);
            if let Some(ls) = &self.lockstep {
                ls.delivered(self.tally.counts.delivered - delivered_before);
            }
        }
        if saw_line && !seen.any_line {
            seen.any_line = true;
            self.report(Event::FirstLine(self.id));
        }
        if newest_probe > seen.probe {
            seen.probe = newest_probe;
            self.report(Event::Probe(self.id, newest_probe.unwrap_or(0)));
        }
    }

    fn report(&self, event: Event) {
        // The coordinator stops listening only once the run is over.
        let _ = self.events.send(event);
    }
}
