//! `chatbench fanout`: N connections, S of them sending M marked lines each; measures delivery.
//!
//! Sequence: connect all (hello lines), probe barrier (see `swarm`), read the server's CPU time,
//! start every sender (on its schedule, in rated mode), wait until every receiver has every line or its
//! senders' end lines, read the CPU time again, report. The whole run is bounded by `--timeout`;
//! when it passes, everything stops and what was measured so far is reported as partial.
//!
//! By default a sender writes one line per write(), as a person at netcat or a script piping
//! `while read; do echo; done` into it does: a server then pays its per-read costs once per line.
//! `--batch N` lets a sender put up to N lines in one write(): always in as-fast-as-possible mode,
//! and in rated mode whenever it has fallen behind its schedule (the mode before per-line
//! senders became the default; it measures a server's batching more than its per-line cost).
//!
//! `--lockstep` makes each write wait until everything sent so far has reached every receiver (see
//! `lockstep`): for counting a server's instructions per line, not for its speed.
//!
//! `--rooms R` spreads the connections over R rooms: connection i sends a join line for room
//! i % R (`/join #r{room}` by default, `--join` to change it) right after its hello line, the
//! readiness barrier runs in each room (its last connection probes), and a sender's lines are
//! expected only by the other connections of its room; a line from another room counts as
//! unexpected. With as many senders as rooms, each room has one sender.
//!
//! Several `--addr` spread the connections round-robin over the nodes of a cluster (connection
//! i opens to the (i mod N)th address): a line sent on one node and received on another counts
//! like any other, and such cross-node deliveries also get latency percentiles of their own.
//! Several `--pid` (the nodes, and the broker between them) make the server CPU their sum, and
//! each one's share is reported beside it, as are the deliveries to each node's connections.
//!
//! In rated mode (`--rate`) the senders are staggered evenly over one period (sender j of S
//! starts j/S of a period after sender 0), so the server sees a steady stream as from people
//! typing independently; `--synchronized` starts them all at once, in aligned bursts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::lockstep::Lockstep;
use crate::marker;
use crate::proc;
use crate::report::{Report, Value, field};
use crate::stats::{Tally, Totals};
use crate::swarm::{Join, Setup, Swarm, WaitError};

/// Most lines one write() may carry: `--batch` above it would only grow the buffer.
const MAX_BATCH: u32 = 1 << 16;
/// A rated write starting later than this behind its schedule counts as late.
const LATE_US: u64 = 2000;
/// Cap on the memory for duplicate detection (one bit per receiver, sender and line).
const MAX_TRACKING_BYTES: u64 = 1 << 30;

/// Options of `chatbench fanout`.
#[derive(Args, Debug)]
pub struct FanoutArgs {
    /// Server address, HOST:PORT; several (repeated, or separated by commas) spread the
    /// connections round-robin over them: connection i opens to the (i mod N)th.
    #[arg(long, required = true, value_delimiter = ',')]
    pub addr: Vec<String>,
    /// Connections to open.
    #[arg(long)]
    pub clients: usize,
    /// How many of them (the first ones) send.
    #[arg(long)]
    pub senders: usize,
    /// Lines each sender sends.
    #[arg(long)]
    pub messages: u32,
    /// Lines per second per sender (default: as fast as possible).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Most lines per write(): 1 (the default) writes each line on its own, as netcat does.
    #[arg(long, default_value_t = 1)]
    pub batch: u32,
    /// With --rate: start every sender at the same instant (aligned bursts) instead of
    /// staggering them evenly over one period.
    #[arg(long, requires = "rate")]
    pub synchronized: bool,
    /// Each write waits until every line sent so far has reached every receiver: one line in
    /// flight per sender, so the server's work per line does not depend on timing (for
    /// instruction counts; the throughput it reports is the round trip's).
    #[arg(long)]
    pub lockstep: bool,
    /// Bytes per line, line end excluded (the marker is never cut: this is a minimum).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// First line sent on each connection, e.g. a nickname; `{i}` becomes the connection index.
    #[arg(long)]
    pub hello: Option<String>,
    /// Spread the connections over this many rooms: connection i enters room i % ROOMS (with
    /// the --join line, after the hello line), and a sender's lines are expected only by the
    /// other connections of its room.
    #[arg(long)]
    pub rooms: Option<u32>,
    /// With --rooms: the line that enters a room; `{room}` becomes the room's number (0 to
    /// ROOMS - 1), `{i}` the connection index.
    #[arg(long, default_value = "/join #r{room}")]
    pub join: String,
    /// PID of the server, to report its CPU time; several (repeated, or separated by commas):
    /// their sum, and each one's share.
    #[arg(long, value_delimiter = ',')]
    pub pid: Vec<u32>,
    /// Give up after this many seconds and report partial results.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// The server echoes lines back to their sender too.
    #[arg(long)]
    pub echo: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

impl FanoutArgs {
    /// Rejects values that cannot make a run.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.clients == 0 || self.senders == 0 || self.messages == 0 {
            bail!("--clients, --senders and --messages must be at least 1");
        }
        if self.senders > self.clients {
            bail!(
                "--senders ({}) cannot exceed --clients ({})",
                self.senders,
                self.clients
            );
        }
        if self.clients > u32::MAX as usize {
            bail!("--clients is too large");
        }
        if let Some(r) = self.rate
            && !(r.is_finite() && r > 0.0)
        {
            bail!("--rate must be a positive number of lines per second");
        }
        if !(1..=MAX_BATCH).contains(&self.batch) {
            bail!("--batch must be between 1 and {MAX_BATCH} lines per write");
        }
        if self.size > 1 << 20 {
            bail!("--size must be at most 1048576 bytes");
        }
        crate::check_timeout(self.timeout)?;
        crate::check_hello(self.hello.as_deref())?;
        if let Some(rooms) = self.rooms {
            if rooms == 0 || rooms as usize > self.clients {
                bail!("--rooms must be between 1 and --clients ({})", self.clients);
            }
            if self.lockstep && self.clients % rooms as usize != 0 {
                bail!(
                    "--lockstep with --rooms needs rooms of one size: --clients a multiple of --rooms"
                );
            }
            if self.join.contains(['\n', '\r']) {
                bail!("--join must be a single line");
            }
        }
        let bits = self.clients as u64 * self.senders as u64 * u64::from(self.messages);
        if bits / 8 > MAX_TRACKING_BYTES {
            bail!(
                "clients x senders x messages is too large: tracking duplicates would need {} MiB",
                (bits / 8) >> 20
            );
        }
        Ok(())
    }
}

/// What every sender does.
#[derive(Clone, Copy)]
struct Plan {
    messages: u32,
    size: usize,
    rate: Option<f64>,
    /// Most lines per write().
    batch: u32,
    /// Stagger the senders' schedules over one period (rated mode).
    staggered: bool,
    senders: u32,
    /// When sender 0's line 0 is due, microseconds since the run's start.
    start_us: u64,
    base: Instant,
}

impl Plan {
    /// When sender `id`'s line `seq` is due (rated mode): staggered, sender j of S is j/S of a
    /// period behind sender 0.
    fn due_us(&self, id: u32, seq: u32, rate: f64) -> u64 {
        let offset = if self.staggered {
            f64::from(id) / f64::from(self.senders)
        } else {
            0.0
        };
        self.start_us + ((f64::from(seq) + offset) * 1e6 / rate) as u64
    }
}

/// How one sender's run went.
#[derive(Default)]
struct Sent {
    lines: u32,
    writes: u64,
    late_writes: u64,
    max_lag_us: u64,
    error: Option<String>,
}

fn now_us(base: Instant) -> u64 {
    base.elapsed().as_micros() as u64
}

/// Sends `plan.messages` data lines as connection `id`, then its end line; stops early when
/// cancelled. With `lockstep`, each write waits for the lines before it to be delivered.
async fn send(
    id: u32,
    wr: &mut OwnedWriteHalf,
    plan: Plan,
    lockstep: Option<Arc<Lockstep>>,
    cancel: CancellationToken,
) -> Sent {
    let mut sent = Sent::default();
    let mut buf = Vec::with_capacity(plan.batch.min(1024) as usize * (plan.size + 32));
    // Each pass writes at least one line or sleeps until the next is due: at most 2 x messages
    // passes, and the cancel (the deadline) cuts it short.
    while sent.lines < plan.messages {
        let now = now_us(plan.base);
        let n = match plan.rate {
            None => plan.batch.min(plan.messages - sent.lines),
            Some(rate) => {
                let due = plan.due_us(id, sent.lines, rate);
                if now < due {
                    let wake = plan.base + Duration::from_micros(due);
                    tokio::select! {
                        _ = tokio::time::sleep_until(wake) => continue,
                        _ = cancel.cancelled() => break,
                    }
                }
                let lag = now - due;
                sent.max_lag_us = sent.max_lag_us.max(lag);
                if lag > LATE_US {
                    sent.late_writes += 1;
                }
                // Everything already due goes out in this write, up to a batch.
                let mut n = 1;
                while n < plan.batch
                    && sent.lines + n < plan.messages
                    && plan.due_us(id, sent.lines + n, rate) <= now
                {
                    n += 1;
                }
                n
            }
        };
        buf.clear();
        for seq in sent.lines..sent.lines + n {
            marker::push_data_line(&mut buf, id, seq, now, plan.size);
        }
        if let Some(ls) = &lockstep {
            ls.sending(u64::from(n));
        }
        tokio::select! {
            r = wr.write_all(&buf) => if let Err(e) = r {
                sent.error = Some(format!("sender {id}: {e}"));
                return sent;
            },
            _ = cancel.cancelled() => return sent,
        }
        sent.lines += n;
        sent.writes += 1;
        if let Some(ls) = &lockstep {
            tokio::select! {
                _ = ls.settled() => {}
                _ = cancel.cancelled() => return sent,
            }
        }
    }
    if !cancel.is_cancelled() {
        buf.clear();
        marker::push_end_line(&mut buf, id, sent.lines);
        tokio::select! {
            r = wr.write_all(&buf) => if let Err(e) = r {
                sent.error = Some(format!("sender {id}: end line: {e}"));
            },
            _ = cancel.cancelled() => {}
        }
    }
    sent
}

/// Runs the benchmark and prints its report. Ok(true): the run completed (even with losses);
/// Ok(false): it timed out and the report is partial; Err: it could not run at all.
pub async fn run(args: &FanoutArgs, addrs: Vec<SocketAddr>) -> anyhow::Result<bool> {
    let base = Instant::now();
    let deadline = base + Duration::from_secs_f64(args.timeout);
    let (senders, messages, echo) = (args.senders as u32, args.messages, args.echo);
    let rooms = args.rooms.unwrap_or(1);
    let join = args.rooms.map(|rooms| Join {
        line: args.join.clone(),
        rooms,
    });
    let room_of = |i: usize| i % rooms as usize;
    let mut members = vec![0u64; rooms as usize];
    for i in 0..args.clients {
        members[room_of(i)] += 1;
    }
    // Connections that get each line of sender `s`: the others in its room.
    let receivers_of = |s: usize| members[room_of(s)] - 1 + u64::from(echo);
    // Rooms are of one size under --lockstep (see `check`).
    let lockstep = args
        .lockstep
        .then(|| Arc::new(Lockstep::new(receivers_of(0))));
    let nodes = addrs.len() as u32;
    let setup = Setup {
        addrs,
        clients: args.clients,
        hello: args.hello.clone(),
        join,
        tally: Box::new(move |i| {
            Tally::in_rooms(senders, messages, i, echo, rooms).across_nodes(nodes)
        }),
        lockstep: lockstep.clone(),
        base,
    };
    let mut swarm = Swarm::connect(setup, deadline).await?;
    let mut notes = Vec::new();
    // One barrier per room, the room's last connection probing: probes reach their room only.
    for room in 0..rooms as usize {
        let in_room = |i: &usize| room_of(*i) == room;
        let prober = (0..args.clients)
            .rev()
            .find(in_room)
            .expect("rooms <= clients");
        let participants: Vec<usize> = (0..args.clients)
            .filter(|i| in_room(i) && (echo || *i != prober))
            .collect();
        match swarm.barrier(prober, &participants, deadline).await {
            Ok(()) => {}
            Err(WaitError::Closed(why)) => bail!("{why}"),
            Err(WaitError::TimedOut(why)) => {
                let place = if rooms > 1 {
                    format!(" in room {room}")
                } else {
                    String::new()
                };
                notes.push(format!("result: TIMED OUT during setup{place}: {why}"));
                let run = Run {
                    partial: true,
                    ..Run::default()
                };
                print(args, &run, notes);
                swarm.finish().await;
                return Ok(false);
            }
        }
    }
    let setup_s = base.elapsed().as_secs_f64();
    let cpu_before = cpu_readings(&args.pid)?;

    let plan = Plan {
        messages,
        size: args.size,
        rate: args.rate,
        batch: args.batch,
        staggered: args.rate.is_some() && !args.synchronized,
        senders,
        start_us: now_us(base),
        base,
    };
    let handles: Vec<_> = (0..senders)
        .map(|id| {
            let mut wr = swarm.take_writer(id as usize);
            let (cancel, lockstep) = (swarm.cancel.clone(), lockstep.clone());
            tokio::spawn(async move {
                let sent = send(id, &mut wr, plan, lockstep, cancel).await;
                // Returned, not dropped: dropping the write half would half-close the connection,
                // and a server may end the session at EOF while we still read from it.
                (sent, wr)
            })
        })
        .collect();
    let mut timed_out = false;
    let mut outcomes = Vec::with_capacity(handles.len());
    let mut keep_open = Vec::with_capacity(handles.len());
    for mut h in handles {
        let joined = match tokio::time::timeout_at(deadline, &mut h).await {
            Ok(joined) => joined,
            Err(_) => {
                timed_out = true;
                swarm.cancel.cancel();
                // A cancelled sender returns at once, with what it had sent.
                h.await
            }
        };
        let (sent, wr) = joined.context("sender task failed")?;
        outcomes.push(sent);
        keep_open.push(wr);
    }
    let completed = !timed_out && swarm.wait_done(deadline).await;
    let end_us = now_us(base);
    let cpu_after = cpu_readings(&args.pid)?;
    let disconnected = swarm.closed();
    let tallies = swarm.finish().await;
    drop(keep_open);

    let mut run = Run {
        setup_s: Some(setup_s),
        disconnected,
        partial: !completed,
        delivered_by_node: vec![0; nodes as usize],
        ..Run::default()
    };
    for t in &tallies {
        run.totals.add(&t.counts);
        run.delivered_by_node[t.node() as usize] += t.counts.delivered;
    }
    for (id, s) in outcomes.iter().enumerate() {
        run.sent += u64::from(s.lines);
        run.expected += u64::from(s.lines) * receivers_of(id);
        run.writes += s.writes;
        run.late_writes += s.late_writes;
        run.max_lag_us = run.max_lag_us.max(s.max_lag_us);
        if let Some(e) = &s.error {
            notes.push(format!("warning: {e}"));
        }
    }
    let last = if run.totals.delivered > 0 {
        run.totals.last_delivery_us
    } else {
        end_us
    };
    run.elapsed_s = Some(last.saturating_sub(plan.start_us) as f64 / 1e6);
    if !args.pid.is_empty() {
        let used: Vec<(f64, Option<f64>)> = cpu_before
            .iter()
            .zip(&cpu_after)
            .map(|(a, b)| {
                let precise = match (&a.1, &b.1) {
                    (Some(a), Some(b)) => Some(proc::cpu_seconds_between(a, b)),
                    _ => None,
                };
                (b.0 - a.0, precise)
            })
            .collect();
        run.server_cpu_s = Some(used.iter().map(|u| u.0).sum());
        run.server_cpu_ns_by_pid = used.iter().map(|u| u.1).collect();
        run.server_cpu_ns_s = run.server_cpu_ns_by_pid.iter().copied().sum();
    }
    let sent: Vec<u32> = outcomes.iter().map(|s| s.lines).collect();
    if let Some(note) = lost_lines(&tallies, &sent) {
        notes.push(note);
    }
    verdict(&mut notes, args, &run);
    print(args, &run, notes);
    Ok(completed)
}

/// Most lost lines a note names.
const LOST_SHOWN: usize = 8;

/// A note naming the lines that did not reach every receiver (sender#sequence, and how many
/// receivers missed each), the first few of them: whether the losses are whole lines, a few
/// receivers, or one sender's tail tells a relay's bugs apart. None when nothing was lost.
fn lost_lines(tallies: &[Tally], sent: &[u32]) -> Option<String> {
    let mut missed: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    for t in tallies {
        for line in t.missing(sent) {
            *missed.entry(line).or_default() += 1;
        }
    }
    if missed.is_empty() {
        return None;
    }
    let senders: BTreeSet<u32> = missed.keys().map(|&(s, _)| s).collect();
    let shown: Vec<String> = missed
        .iter()
        .take(LOST_SHOWN)
        .map(|(&(s, seq), n)| format!("{s}#{seq} ({n})"))
        .collect();
    let more = if missed.len() > LOST_SHOWN {
        ", ..."
    } else {
        ""
    };
    Some(format!(
        "note: {} lines from {} senders did not reach every receiver; sender#line (receivers \
         that missed it): {}{more}",
        missed.len(),
        senders.len(),
        shown.join(", ")
    ))
}

/// One process's CPU time: in clock ticks, and to the nanosecond per thread (where the kernel
/// keeps schedstat).
type CpuReading = (f64, Option<proc::ThreadCpu>);

/// The CPU time of each of `pids` so far, in their order.
fn cpu_readings(pids: &[u32]) -> anyhow::Result<Vec<CpuReading>> {
    pids.iter()
        .map(|&pid| {
            let context = || format!("reading CPU time of {pid}");
            let ticks = proc::cpu_seconds(pid).with_context(context)?;
            let precise = proc::thread_cpu_ns(pid).with_context(context)?;
            Ok((ticks, precise))
        })
        .collect()
}

/// What one run measured, ready to print.
#[derive(Default)]
struct Run {
    setup_s: Option<f64>,
    sent: u64,
    expected: u64,
    totals: Totals,
    disconnected: usize,
    elapsed_s: Option<f64>,
    server_cpu_s: Option<f64>,
    /// The same from schedstat, to the nanosecond (live threads only).
    server_cpu_ns_s: Option<f64>,
    /// Each `--pid`'s share of it, in their order.
    server_cpu_ns_by_pid: Vec<Option<f64>>,
    /// Unique deliveries to the connections of each node (each `--addr`), in their order.
    delivered_by_node: Vec<u64>,
    writes: u64,
    late_writes: u64,
    max_lag_us: u64,
    partial: bool,
}

/// The notes that say, in words, how the run went.
fn verdict(notes: &mut Vec<String>, args: &FanoutArgs, run: &Run) {
    let t = &run.totals;
    if run.disconnected > 0 {
        notes.push(format!(
            "warning: the server closed {} of {} connections during the run",
            run.disconnected, args.clients
        ));
    }
    if t.foreign > 0 {
        notes.push(format!(
            "warning: {} marked lines were not expected \
             (another run, an echoing server without --echo, or lines from another room?)",
            t.foreign
        ));
    }
    if args.rate.is_some() && run.late_writes > 0 {
        notes.push(format!(
            "warning: chatbench fell behind: {} of {} writes started more than {} ms late \
             (max {:.1} ms)",
            run.late_writes,
            run.writes,
            LATE_US / 1000,
            run.max_lag_us as f64 / 1000.0
        ));
    }
    if run.server_cpu_s.is_some_and(|c| c < 0.1) && run.server_cpu_ns_s.is_none() {
        notes.push(
            "note: the server used under 0.1 s of CPU, which /proc counts in clock ticks \
             (usually 10 ms): send more lines for a precise CPU figure"
                .to_owned(),
        );
    }
    let lost = run.expected.saturating_sub(t.delivered);
    let result = if run.partial {
        format!(
            "result: TIMED OUT after {} s: partial results ({} of {} expected deliveries seen)",
            args.timeout, t.delivered, run.expected
        )
    } else if lost == 0 && t.duplicated == 0 && t.reordered == 0 {
        "result: complete: every line reached every receiver once, in order".to_owned()
    } else {
        format!(
            "result: complete with errors: {lost} lost, {} duplicated, {} reordered",
            t.duplicated, t.reordered
        )
    };
    notes.push(result);
}

fn print(args: &FanoutArgs, run: &Run, notes: Vec<String>) {
    let t = &run.totals;
    let delivered = t.delivered;
    let per_s = run
        .elapsed_s
        .filter(|&e| e > 0.0)
        .map(|e| delivered as f64 / e);
    let per_million = |cpu: Option<f64>| {
        cpu.filter(|_| delivered > 0)
            .map(|c| c / delivered as f64 * 1e6)
    };
    let lost = run.expected.saturating_sub(delivered);
    let lag = args.rate.map(|_| run.max_lag_us as f64 / 1000.0);
    let l = &t.latency;
    let latency = Value::Group(vec![
        // The low end shows the fixed part of a delivery (wake-up, read, first write); the
        // median and above add the fan-out and the scheduling around it.
        field("p1", "p1", Value::opt_count(l.quantile(10)), "us"),
        field("p10", "p10", Value::opt_count(l.quantile(100)), "us"),
        field("p50", "p50", Value::opt_count(l.quantile(500)), "us"),
        field("p99", "p99", Value::opt_count(l.quantile(990)), "us"),
        field("p999", "p99.9", Value::opt_count(l.quantile(999)), "us"),
        field("max", "max", Value::opt_count(l.max()), "us"),
    ]);
    let x = &t.cross_node_latency;
    let nodes = run.delivered_by_node.len();
    // Null with one node: no delivery crosses, and 0 would read as a measurement.
    let crossing = (nodes > 1).then_some(x.count());
    let cross_node_latency = Value::Group(vec![
        field("cross_p50", "p50", Value::opt_count(x.quantile(500)), "us"),
        field("cross_p99", "p99", Value::opt_count(x.quantile(990)), "us"),
        field(
            "cross_p999",
            "p99.9",
            Value::opt_count(x.quantile(999)),
            "us",
        ),
        field("cross_max", "max", Value::opt_count(x.max()), "us"),
    ]);
    let by_node = Value::Array(
        run.delivered_by_node
            .iter()
            .map(|&d| Value::count(d))
            .collect(),
    );
    let by_pid = Value::Array(
        run.server_cpu_ns_by_pid
            .iter()
            .map(|&c| Value::opt_float(c, 6))
            .collect(),
    );
    let count = |n: usize| Value::count(n as u64);
    let rows = [
        ("clients", "clients", count(args.clients), ""),
        ("nodes", "nodes (addresses)", count(nodes), ""),
        ("senders", "senders", count(args.senders), ""),
        (
            "rooms",
            "rooms",
            args.rooms
                .map_or(Value::Null, |r| Value::count(u64::from(r))),
            "",
        ),
        (
            "messages",
            "messages per sender",
            count(args.messages as usize),
            "",
        ),
        ("size", "line size", count(args.size), "bytes"),
        (
            "rate",
            "rate per sender",
            Value::opt_float(args.rate, 1),
            "lines/s",
        ),
        (
            "lines_per_write",
            "lines per write, at most",
            Value::count(u64::from(args.batch)),
            "",
        ),
        (
            "lockstep",
            "lockstep (one line in flight per sender)",
            Value::Bool(args.lockstep),
            "",
        ),
        (
            "staggered",
            "senders staggered over a period",
            // Only a rated run has a schedule to stagger.
            args.rate
                .map_or(Value::Null, |_| Value::Bool(!args.synchronized)),
            "",
        ),
        ("setup_s", "setup", Value::opt_float(run.setup_s, 3), "s"),
        ("sent", "sent", Value::count(run.sent), "lines"),
        (
            "expected",
            "expected",
            Value::count(run.expected),
            "deliveries",
        ),
        ("delivered", "delivered", Value::count(delivered), ""),
        ("lost", "lost", Value::count(lost), ""),
        ("duplicated", "duplicated", Value::count(t.duplicated), ""),
        ("reordered", "reordered", Value::count(t.reordered), ""),
        ("foreign", "unexpected markers", Value::count(t.foreign), ""),
        (
            "bytes_per_delivery",
            "bytes received per delivery",
            Value::opt_float(
                (delivered > 0).then(|| t.received_bytes as f64 / delivered as f64),
                1,
            ),
            "",
        ),
        ("disconnected", "disconnected", count(run.disconnected), ""),
        (
            "elapsed_s",
            "elapsed",
            Value::opt_float(run.elapsed_s, 3),
            "s",
        ),
        (
            "deliveries_per_s",
            "deliveries per second",
            Value::opt_float(per_s, 0),
            "",
        ),
        ("latency_us", "latency", latency, ""),
        (
            "cross_node_delivered",
            "deliveries between nodes",
            Value::opt_count(crossing),
            "",
        ),
        (
            "cross_node_latency_us",
            "cross-node latency",
            cross_node_latency,
            "",
        ),
        ("delivered_by_node", "delivered by node", by_node, ""),
        (
            "server_cpu_s",
            "server CPU",
            Value::opt_float(run.server_cpu_s, 2),
            "s",
        ),
        (
            "cpu_s_per_million",
            "server CPU per million deliveries",
            Value::opt_float(per_million(run.server_cpu_s), 3),
            "s",
        ),
        (
            "server_cpu_ns_s",
            "server CPU, ns clock",
            Value::opt_float(run.server_cpu_ns_s, 6),
            "s",
        ),
        (
            "server_cpu_ns_s_by_pid",
            "server CPU by PID, ns clock",
            by_pid,
            "s",
        ),
        (
            "cpu_ns_s_per_million",
            "server CPU per million, ns clock",
            Value::opt_float(per_million(run.server_cpu_ns_s), 4),
            "s",
        ),
        (
            "writes",
            "data writes by senders",
            Value::count(run.writes),
            "",
        ),
        (
            "late_writes",
            "late writes",
            Value::count(run.late_writes),
            "",
        ),
        (
            "max_lag_ms",
            "max sender lag",
            Value::opt_float(lag, 3),
            "ms",
        ),
        ("partial", "partial", Value::Bool(run.partial), ""),
    ];
    let mut report = Report::default();
    for (key, label, value, unit) in rows {
        report.add(key, label, value, unit);
    }
    for n in notes {
        report.note(n);
    }
    crate::emit(&report, args.json);
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn plan(senders: u32, staggered: bool) -> Plan {
        Plan {
            messages: 10,
            size: 64,
            rate: Some(100.0),
            batch: 1,
            staggered,
            senders,
            start_us: 1_000,
            base: Instant::now(),
        }
    }

    #[test]
    fn staggered_senders_spread_evenly_over_one_period() {
        // 100 lines/s: a 10 ms period; 4 senders start 2.5 ms apart, then keep their period.
        let p = plan(4, true);
        let firsts: Vec<u64> = (0..4).map(|id| p.due_us(id, 0, 100.0)).collect();
        assert_eq!(firsts, [1_000, 3_500, 6_000, 8_500]);
        assert_eq!(p.due_us(3, 1, 100.0), 18_500);
        // The last sender's first line is still due before sender 0's second.
        assert!(p.due_us(3, 0, 100.0) < p.due_us(0, 1, 100.0));
    }

    #[test]
    fn synchronized_senders_share_one_schedule() {
        let p = plan(4, false);
        for id in 0..4 {
            assert_eq!(p.due_us(id, 0, 100.0), 1_000);
            assert_eq!(p.due_us(id, 5, 100.0), 51_000);
        }
    }

    /// The fanout arguments of `chatbench fanout ARGS`.
    fn parse(args: &str) -> Result<FanoutArgs, String> {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            fanout: FanoutArgs,
        }
        let argv = std::iter::once("chatbench").chain(args.split_whitespace());
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        cli.fanout.check().map_err(|e| e.to_string())?;
        Ok(cli.fanout)
    }

    #[test]
    fn one_line_per_write_unless_batch_is_given() {
        let base = "--addr 127.0.0.1:1 --clients 2 --senders 1 --messages 1";
        assert_eq!(parse(base).unwrap().batch, 1);
        assert_eq!(parse(&format!("{base} --batch 64")).unwrap().batch, 64);
        let zero = parse(&format!("{base} --batch 0")).unwrap_err();
        assert!(zero.contains("--batch"), "{zero}");
        let huge = parse(&format!("{base} --batch {}", MAX_BATCH + 1)).unwrap_err();
        assert!(huge.contains("--batch"), "{huge}");
    }

    #[test]
    fn addresses_and_pids_repeat_or_come_separated_by_commas() {
        let rest = "--clients 2 --senders 1 --messages 1";
        let one = parse(&format!("--addr 127.0.0.1:1 {rest}")).unwrap();
        assert_eq!(one.addr, ["127.0.0.1:1"]);
        assert!(one.pid.is_empty());
        let repeated = parse(&format!(
            "--addr 127.0.0.1:1 --addr 127.0.0.1:2 --addr [::1]:3 --pid 7 --pid 8 {rest}"
        ))
        .unwrap();
        assert_eq!(repeated.addr, ["127.0.0.1:1", "127.0.0.1:2", "[::1]:3"]);
        assert_eq!(repeated.pid, [7, 8]);
        let listed = parse(&format!(
            "--addr 127.0.0.1:1,127.0.0.1:2 --addr [::1]:3 --pid 7,8 {rest}"
        ))
        .unwrap();
        assert_eq!(listed.addr, repeated.addr);
        assert_eq!(listed.pid, repeated.pid);
        assert!(parse(rest).unwrap_err().contains("--addr"));
    }

    #[test]
    fn synchronized_needs_a_rate() {
        let base = "--addr 127.0.0.1:1 --clients 2 --senders 1 --messages 1";
        assert!(parse(&format!("{base} --synchronized")).is_err());
        let rated = parse(&format!("{base} --rate 10 --synchronized")).unwrap();
        assert!(rated.synchronized);
        assert!(!parse(&format!("{base} --rate 10")).unwrap().synchronized);
    }
}
