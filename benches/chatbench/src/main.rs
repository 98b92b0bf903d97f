//! chatbench: a load generator for line-based chat servers (groupchatd, `ncat --chat`, ...).
//!
//! `fanout` measures relay throughput, loss and latency; `idle` measures what idle connections
//! cost the server in memory. A sent line should reach every other connection (every connection
//! with `--echo`); lost = expected - unique deliveries, duplicated = a line received again by the
//! same client, reordered = a line received after a higher sequence number from its sender.
//! Modules: `marker` (line format, framing), `stats` (accounting), `proc` (server CPU and RSS),
//! `swarm` (connections, readiness), `reader` (one connection's input), `lockstep` (one line in
//! flight, for instruction counts), `fanout`, `idle`, `report`.
//!
//! This file only parses the command line, prepares the process (file descriptor limit, a
//! runtime with one worker per core) and maps outcomes to exit codes: 0 the run completed (even
//! with losses, which the report states), 1 usage or connection error, 2 timed out (partial
//! results printed).

mod fanout;
mod idle;
mod lockstep;
mod marker;
mod proc;
mod reader;
mod report;
mod stats;
mod swarm;

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors needed besides the connections (stdio, the runtime's own, slack).
const FD_MARGIN: u64 = 64;

#[derive(Parser, Debug)]
#[command(
    name = "chatbench",
    version,
    about = "Load generator for line-based chat servers",
    long_about = "Load generator for line-based chat servers: groupchatd, `ncat --chat`, \
                  anything netcat can talk to.\n\nExit status: 0 the run completed (losses are \
                  reported, not failures), 1 usage or connection error, 2 timed out (partial \
                  results printed)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// N connections; the first S send M marked lines each; measure delivery and latency.
    Fanout(fanout::FanoutArgs),
    /// Hold N idle connections; measure the server's memory per connection.
    Idle(idle::IdleArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors; everything else is a usage error: 1, not
            // clap's 2, which we keep for "timed out".
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("chatbench: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    let (addrs, clients) = match &cli.command {
        Command::Fanout(a) => {
            a.check()?;
            (&a.addr, a.clients)
        }
        Command::Idle(a) => {
            a.check()?;
            (&a.addr, a.clients)
        }
    };
    let addrs = addrs
        .iter()
        .map(|a| resolve(a))
        .collect::<anyhow::Result<Vec<_>>>()?;
    raise_fd_limit(clients);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    // As many workers as cores: the generator must not be the bottleneck it measures.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        match &cli.command {
            Command::Fanout(a) => fanout::run(a, addrs).await,
            Command::Idle(a) => idle::run(a, addrs).await,
        }
    })
}

/// The first socket address of one `--addr` value.
fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("--addr {addr}: expected HOST:PORT"))?
        .next()
        .with_context(|| format!("--addr {addr}: no address found"))
}

/// Raises the soft RLIMIT_NOFILE to the hard limit, and warns if `clients` still will not fit.
fn raise_fd_limit(clients: usize) {
    let needed = clients as u64 + FD_MARGIN;
    let limit = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                eprintln!("chatbench: warning: could not raise the open file limit: {e}");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            eprintln!("chatbench: warning: could not read the open file limit: {e}");
            return;
        }
    };
    if needed > limit {
        eprintln!(
            "chatbench: warning: {clients} connections need about {needed} file descriptors, \
             but the limit is {limit} (the hard limit); expect connection errors"
        );
    }
}

/// Rejects a timeout that is not a positive number of seconds (at most a day).
pub fn check_timeout(secs: f64) -> anyhow::Result<()> {
    if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0) {
        bail!("--timeout must be between 0 and 86400 seconds");
    }
    Ok(())
}

/// Rejects a hello line that would be more than one line.
pub fn check_hello(hello: Option<&str>) -> anyhow::Result<()> {
    if hello.is_some_and(|h| h.contains(['\n', '\r'])) {
        bail!("--hello must be a single line");
    }
    Ok(())
}

/// Prints a report to stdout, as JSON or text.
pub fn emit(report: &report::Report, json: bool) {
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
}
