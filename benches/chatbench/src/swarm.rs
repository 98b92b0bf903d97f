//! A set of client connections: connecting them, their reader tasks, and readiness.
//!
//! Every connection gets a reader task (see `reader`) from the moment it connects. Readers tell
//! the coordinator, this module, about milestones (first line, probes seen, done, closed) over one
//! channel; the coordinator keeps the only copy of that state. Every wait is bounded by the run's
//! deadline; the cancellation token stops all readers at once.
//!
//! Readiness is a probe barrier rather than "wait until quiet": the prober (the last connection)
//! sends a probe line, re-sent with a new round number (backing off to [`PROBE_INTERVAL_MAX`])
//! until every participant has seen one (so every client is in the room), then one final round
//! that everyone must see. A server that relays in one total order (groupchatd does) has then
//! delivered every join notice queued before it, so measurement starts with quiet sockets.
//!
//! The end of a run is normally deterministic too: every sender ends with an end line, and a
//! reader is done once it has every line or the end line of each sender. But a sender the server
//! disconnects never gets its end line relayed; so once the server has closed any connection, the
//! wait also ends when deliveries have stopped for [`DRAIN_QUIET`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::lockstep::Lockstep;
use crate::marker;
use crate::reader::{Event, Reader};
use crate::stats::Tally;

/// Connections being set up at once, so a big swarm does not overflow the server's accept backlog.
const CONNECT_CONCURRENCY: usize = 256;
/// How long to wait for the first probe before sending the next round; doubled each round up to
/// [`PROBE_INTERVAL_MAX`], so a quick server is ready quickly and a slow one is not flooded.
const PROBE_INTERVAL_MIN: Duration = Duration::from_millis(5);
/// The longest wait between probe rounds.
const PROBE_INTERVAL_MAX: Duration = Duration::from_millis(200);
/// After the server closed a connection: no delivery for this long means nothing more is coming.
pub const DRAIN_QUIET: Duration = Duration::from_secs(1);

/// How to open the connections.
pub struct Setup {
    /// Server addresses (at least one): connection `i` opens to `addrs[i % addrs.len()]`, so
    /// the connections are spread round-robin over the nodes of a cluster.
    pub addrs: Vec<SocketAddr>,
    /// Number of connections.
    pub clients: usize,
    /// First line to send on each, `{i}` replaced by the connection index.
    pub hello: Option<String>,
    /// A line that puts each connection into its room, sent after the hello line.
    pub join: Option<Join>,
    /// Builds connection `i`'s tally (what it expects to receive).
    pub tally: Box<dyn Fn(u32) -> Tally + Send + Sync>,
    /// Where readers add their data deliveries, for senders in lockstep.
    pub lockstep: Option<Arc<Lockstep>>,
    /// The run's clock: all times are microseconds since this instant.
    pub base: Instant,
}

/// The coordinator's view of one connection.
#[derive(Clone, Default)]
struct State {
    first_line: bool,
    probe: Option<u32>,
    done: bool,
    closed: bool,
}

/// How many connections reached each milestone, kept up to date event by event so that no wait
/// rescans every connection per event (quadratic in a big swarm).
#[derive(Default)]
struct Counts {
    first_line: usize,
    closed: usize,
    /// Done or closed: nothing more is awaited from them.
    finished: usize,
}

/// Open connections, their readers, and what the readers have reported.
pub struct Swarm {
    writers: Vec<Option<OwnedWriteHalf>>,
    readers: Vec<JoinHandle<Tally>>,
    events: mpsc::UnboundedReceiver<Event>,
    state: Vec<State>,
    counts: Counts,
    /// Reads that carried at least one data line, across all readers: shows deliveries go on.
    progress: Arc<AtomicU64>,
    /// Stops every reader (and whatever else the caller hands it to).
    pub cancel: CancellationToken,
}

/// Why waiting on the swarm ended without success.
#[derive(Debug)]
pub enum WaitError {
    /// The deadline passed.
    TimedOut(String),
    /// A connection was closed by the server while it was still needed.
    Closed(String),
}

impl Swarm {
    /// Opens `setup.clients` connections (sending the hello line on each), or fails on the first
    /// connection that cannot be opened by `deadline`.
    pub async fn connect(setup: Setup, deadline: Instant) -> anyhow::Result<Swarm> {
        let cancel = CancellationToken::new();
        let (events_tx, events) = mpsc::unbounded_channel();
        let progress = Arc::new(AtomicU64::new(0));
        let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
        let setup = Arc::new(setup);
        let mut opening = JoinSet::new();
        for i in 0..setup.clients {
            let (setup, gate) = (setup.clone(), gate.clone());
            let (events, progress, cancel) = (events_tx.clone(), progress.clone(), cancel.clone());
            opening.spawn(async move {
                let _permit = gate.acquire_owned().await;
                let opened = match tokio::time::timeout_at(deadline, open(&setup, i)).await {
                    Ok(opened) => opened,
                    Err(_) => Err(anyhow!("timed out")),
                };
                // Read from the start, so greetings and join notices never pile up unread.
                let started = opened.map(|stream| {
                    let (rd, wr) = stream.into_split();
                    let tally = (setup.tally)(i as u32);
                    let reader = Reader::new(
                        i,
                        tally,
                        events,
                        progress,
                        setup.lockstep.clone(),
                        setup.base,
                    );
                    (wr, tokio::spawn(reader.run(rd, cancel)))
                });
                (i, started)
            });
        }
        let mut conns: Vec<_> = (0..setup.clients).map(|_| None).collect();
        while let Some(joined) = opening.join_next().await {
            let (i, started) = joined.context("connect task failed")?;
            match started {
                Ok(conn) => conns[i] = Some(conn),
                Err(e) => {
                    cancel.cancel();
                    let addr = setup.addr_of(i);
                    return Err(e.context(format!("connection {i} to {addr}")));
                }
            }
        }
        let (writers, readers) = conns
            .into_iter()
            .map(|c| {
                let (wr, reader) = c.expect("every connection opened");
                (Some(wr), reader)
            })
            .unzip();
        Ok(Swarm {
            writers,
            readers,
            events,
            state: vec![State::default(); setup.clients],
            counts: Counts::default(),
            progress,
            cancel,
        })
    }

    /// Takes connection `i`'s write half (for a sender task).
    pub fn take_writer(&mut self, i: usize) -> OwnedWriteHalf {
        self.writers[i].take().expect("writer taken once")
    }

    /// Number of connections.
    pub fn len(&self) -> usize {
        self.state.len()
    }

    /// Connections the server has closed so far.
    pub fn closed(&self) -> usize {
        self.counts.closed
    }

    /// The next reader event, or None when `until` passed first.
    async fn next_event(&mut self, until: Instant) -> Option<Event> {
        // Every reader holds a sender until it returns, so the channel cannot close while we wait.
        tokio::time::timeout_at(until, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Records `event` in the state and counts.
    fn apply(&mut self, event: &Event) {
        let (s, c) = (&mut self.state[event.conn()], &mut self.counts);
        let was_finished = s.done || s.closed;
        match *event {
            Event::FirstLine(_) if !s.first_line => {
                s.first_line = true;
                c.first_line += 1;
            }
            Event::Probe(_, round) => s.probe = Some(round),
            Event::Done(_) => s.done = true,
            Event::Closed(_) if !s.closed => {
                s.closed = true;
                c.closed += 1;
            }
            _ => {}
        }
        if !was_finished && (s.done || s.closed) {
            c.finished += 1;
        }
    }

    /// Waits until every connection has received at least one line.
    pub async fn wait_first_lines(&mut self, deadline: Instant) -> Result<(), WaitError> {
        while self.counts.first_line < self.len() {
            let Some(event) = self.next_event(deadline).await else {
                return Err(WaitError::TimedOut(format!(
                    "{} of {} connections received no line",
                    self.len() - self.counts.first_line,
                    self.len()
                )));
            };
            self.apply(&event);
            if let Event::Closed(i) = event
                && !self.state[i].first_line
            {
                return Err(WaitError::Closed(format!(
                    "connection {i} was closed by the server before it sent anything"
                )));
            }
        }
        Ok(())
    }

    /// The probe barrier (see the module docs): `prober` sends probes until every connection
    /// in `participants` has seen one, then a final round they must all see.
    pub async fn barrier(
        &mut self,
        prober: usize,
        participants: &[usize],
        deadline: Instant,
    ) -> Result<(), WaitError> {
        let mut participant = vec![false; self.len()];
        for &i in participants {
            participant[i] = true;
        }
        // Participants that have seen any probe, and (once there is a target) the final one.
        let want = |r: Option<u32>, t: u32| r.is_some_and(|r| r >= t);
        let mut seen_any = participants
            .iter()
            .filter(|&&i| self.state[i].probe.is_some())
            .count();
        let mut target: Option<(u32, usize)> = None;
        let (mut round, mut interval) = (0, PROBE_INTERVAL_MIN);
        self.probe(prober, round, deadline).await?;
        let mut resend_at = Instant::now() + interval;
        loop {
            match target {
                None if seen_any == participants.len() => {
                    round += 1;
                    let seen = participants
                        .iter()
                        .filter(|&&i| want(self.state[i].probe, round))
                        .count();
                    target = Some((round, seen));
                    self.probe(prober, round, deadline).await?;
                    resend_at = Instant::now() + interval;
                    continue;
                }
                Some((_, seen)) if seen == participants.len() => return Ok(()),
                _ => {}
            }
            if Instant::now() >= deadline {
                let seen = target.map_or(seen_any, |(_, seen)| seen);
                return Err(WaitError::TimedOut(format!(
                    "{} of {} clients never saw the readiness probe",
                    participants.len() - seen,
                    participants.len()
                )));
            }
            if let Some(event) = self.next_event(resend_at.min(deadline)).await {
                match event {
                    Event::Probe(i, r) if participant[i] => {
                        let old = self.state[i].probe;
                        if old.is_none() {
                            seen_any += 1;
                        }
                        if let Some((t, seen)) = target.as_mut()
                            && !want(old, *t)
                            && r >= *t
                        {
                            *seen += 1;
                        }
                    }
                    Event::Closed(i) if participant[i] || i == prober => {
                        return Err(WaitError::Closed(format!(
                            "connection {i} was closed by the server during setup"
                        )));
                    }
                    _ => {}
                }
                self.apply(&event);
            }
            if Instant::now() >= resend_at {
                // Later rounds also satisfy the final target, so re-sending never moves it.
                round += 1;
                self.probe(prober, round, deadline).await?;
                interval = (interval * 2).min(PROBE_INTERVAL_MAX);
                resend_at = Instant::now() + interval;
            }
        }
    }

    async fn probe(
        &mut self,
        prober: usize,
        round: u32,
        deadline: Instant,
    ) -> Result<(), WaitError> {
        let mut line = Vec::new();
        marker::push_probe_line(&mut line, round);
        let writer = self.writers[prober]
            .as_mut()
            .expect("prober keeps its writer");
        match tokio::time::timeout_at(deadline, writer.write_all(&line)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(WaitError::Closed(format!(
                "connection {prober}: sending probe: {e}"
            ))),
            Err(_) => Err(WaitError::TimedOut(format!(
                "connection {prober}: the server did not accept the probe line"
            ))),
        }
    }

    /// Waits until every reader has all it expects (or its connection closed), or `deadline`;
    /// once the server has closed a connection, also until deliveries stop (see the module docs).
    /// Returns false on timeout.
    pub async fn wait_done(&mut self, deadline: Instant) -> bool {
        let check_every = DRAIN_QUIET / 4;
        let mut last = (self.progress.load(Ordering::Relaxed), Instant::now());
        while self.counts.finished < self.len() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            if let Some(event) = self.next_event(deadline.min(now + check_every)).await {
                self.apply(&event);
                continue;
            }
            if self.counts.closed == 0 {
                continue;
            }
            let progress = self.progress.load(Ordering::Relaxed);
            if progress != last.0 {
                last = (progress, Instant::now());
            } else if last.1.elapsed() >= DRAIN_QUIET {
                return true;
            }
        }
        true
    }

    /// Stops every reader and returns their tallies; dropping the write halves closes the sockets.
    pub async fn finish(self) -> Vec<Tally> {
        self.cancel.cancel();
        let mut tallies = Vec::with_capacity(self.readers.len());
        for r in self.readers {
            // A reader returns as soon as it sees the cancel; a panicked one has no tally to give.
            if let Ok(t) = r.await {
                tallies.push(t);
            }
        }
        tallies
    }
}

impl Setup {
    /// The address connection `i` opens to.
    pub fn addr_of(&self, i: usize) -> SocketAddr {
        self.addrs[i % self.addrs.len()]
    }
}

/// Connections spread over rooms: connection `i` is in room `i % rooms`, and enters it by
/// sending `line` with `{room}` replaced by that number (and `{i}` by its index).
#[derive(Clone, Debug)]
pub struct Join {
    pub line: String,
    pub rooms: u32,
}

impl Join {
    /// The room of connection `i`.
    pub fn room_of(&self, i: usize) -> u32 {
        (i % self.rooms.max(1) as usize) as u32
    }
}

/// Opens connection `i` and sends its hello line, then its join line (in one write).
async fn open(setup: &Setup, i: usize) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(setup.addr_of(i)).await?;
    // Latency is what we measure: no Nagle delay on our small writes.
    stream.set_nodelay(true)?;
    let mut lines = String::new();
    if let Some(hello) = &setup.hello {
        lines += &hello.replace("{i}", &i.to_string());
        lines.push('\n');
    }
    if let Some(join) = &setup.join {
        let room = join.room_of(i).to_string();
        lines += &join
            .line
            .replace("{room}", &room)
            .replace("{i}", &i.to_string());
        lines.push('\n');
    }
    if !lines.is_empty() {
        stream.write_all(lines.as_bytes()).await?;
    }
    Ok(stream)
}
