//! `chatbench idle`: holds N idle connections and reports what they cost the server in memory.
//!
//! Sequence: read the server's VmRSS, connect all (hello lines), wait until every connection is
//! established as far as the server is concerned, read VmRSS again, hold, close. "Established":
//! with `--hello` and at least two connections, the probe barrier (see `swarm`): a client that
//! receives another's chat line has finished its handshake. Otherwise, each connection has
//! received at least one line (the greeting). Both waits are bounded by `--timeout`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::time::Instant;

use crate::proc;
use crate::report::{Report, Value};
use crate::stats::Tally;
use crate::swarm::{Setup, Swarm, WaitError};

/// Options of `chatbench idle`.
#[derive(Args, Debug)]
pub struct IdleArgs {
    /// Server address, HOST:PORT; several (repeated, or separated by commas) spread the
    /// connections round-robin over them: connection i opens to the (i mod N)th.
    #[arg(long, required = true, value_delimiter = ',')]
    pub addr: Vec<String>,
    /// Connections to open.
    #[arg(long)]
    pub clients: usize,
    /// Seconds to keep them open once established.
    #[arg(long, default_value_t = 0.0)]
    pub hold: f64,
    /// First line sent on each connection, e.g. a nickname; `{i}` becomes the connection index.
    #[arg(long)]
    pub hello: Option<String>,
    /// PID of the server, to report its memory.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Give up establishing the connections after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

impl IdleArgs {
    /// Rejects values that cannot make a run.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.clients == 0 {
            bail!("--clients must be at least 1");
        }
        if !(self.hold.is_finite() && (0.0..=86_400.0).contains(&self.hold)) {
            bail!("--hold must be between 0 and 86400 seconds");
        }
        crate::check_timeout(self.timeout)?;
        crate::check_hello(self.hello.as_deref())
    }
}

/// Runs the measurement and prints its report; Ok(false) when establishing timed out.
pub async fn run(args: &IdleArgs, addrs: Vec<SocketAddr>) -> anyhow::Result<bool> {
    let base = Instant::now();
    let deadline = base + Duration::from_secs_f64(args.timeout);
    let rss = |pid: u32| proc::rss_bytes(pid).with_context(|| format!("reading VmRSS of {pid}"));
    let rss_before = args.pid.map(rss).transpose()?;
    let setup = Setup {
        addrs,
        clients: args.clients,
        hello: args.hello.clone(),
        // Idle connections expect no data lines.
        tally: Box::new(|i| Tally::new(0, 0, i, false)),
        join: None,
        lockstep: None,
        base,
    };
    let mut swarm = Swarm::connect(setup, deadline).await?;
    let waited = if args.hello.is_some() && args.clients >= 2 {
        let prober = args.clients - 1;
        let others: Vec<usize> = (0..prober).collect();
        swarm.barrier(prober, &others, deadline).await
    } else {
        swarm.wait_first_lines(deadline).await
    };
    let mut notes = Vec::new();
    let established = match waited {
        Ok(()) => true,
        Err(WaitError::Closed(why)) => bail!("{why}"),
        Err(WaitError::TimedOut(why)) => {
            notes.push(format!("result: TIMED OUT establishing connections: {why}"));
            false
        }
    };
    let setup_s = base.elapsed().as_secs_f64();
    let rss_after = args.pid.map(rss).transpose()?;
    if established {
        tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
        let closed = swarm.closed();
        if closed > 0 {
            notes.push(format!(
                "warning: the server closed {closed} of {} connections while they were held",
                args.clients
            ));
        }
        notes.push(format!(
            "result: complete: {} connections held for {} s",
            args.clients, args.hold
        ));
    }
    swarm.finish().await;

    let delta = match (rss_before, rss_after) {
        (Some(b), Some(a)) => Some(a as i64 - b as i64),
        _ => None,
    };
    if delta.is_some_and(|d| d <= 0) {
        notes.push(
            "note: the server's RSS did not grow: it reused memory freed by earlier clients; \
             measure on a freshly started server"
                .to_owned(),
        );
    }
    let per_conn = delta.map(|d| d as f64 / args.clients as f64);
    let mut report = Report::default();
    report.add("clients", "clients", Value::count(args.clients as u64), "");
    report.add("setup_s", "setup", Value::Float(setup_s, 3), "s");
    report.add(
        "rss_before_bytes",
        "server RSS before",
        Value::opt_count(rss_before),
        "bytes",
    );
    report.add(
        "rss_after_bytes",
        "server RSS after",
        Value::opt_count(rss_after),
        "bytes",
    );
    report.add(
        "rss_delta_bytes",
        "server RSS growth",
        delta.map_or(Value::Null, Value::Int),
        "bytes",
    );
    report.add(
        "rss_per_conn_bytes",
        "per connection",
        Value::opt_float(per_conn, 0),
        "bytes",
    );
    report.add(
        "rss_per_conn_kib",
        "per connection",
        Value::opt_float(per_conn.map(|b| b / 1024.0), 2),
        "KiB",
    );
    report.add("hold_s", "held", Value::Float(args.hold, 1), "s");
    report.add("partial", "partial", Value::Bool(!established), "");
    for n in notes {
        report.note(n);
    }
    crate::emit(&report, args.json);
    Ok(established)
}
