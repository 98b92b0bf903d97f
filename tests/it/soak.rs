//! Soak: 500 clients for a while, with churn and every kind of message, against the real daemon.
//!
//! A fixed audience (48 listeners, 2 senders of numbered lines) must lose nothing while 450
//! churning clients connect, join, chat (plain lines, `/me`, `/msg`, `/nick`, `/who`) and leave
//! (`/quit`, close or reset), over and over. The daemon's memory and descriptors are sampled
//! throughout and printed as a table; after a warm-up (the first 20% of the run) memory must
//! stay within 10% of the warm-up's peak, descriptors must return to their baseline once the
//! churn stops, and the daemon must never have panicked.
//!
//! The default run lasts 60 s, for CI. To soak for hours:
//!
//! ```sh
//! GROUPCHATD_SOAK_SECS=14400 cargo test --release --test it soak -- --nocapture
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::process::{Daemon, Scratch, admin_stats, fd_count, rss_bytes};
use crate::support::audience::{self, Audience, Spec};
use crate::support::{WAIT, raise_nofile_limit};

const LISTENERS: usize = 48;
const SENDERS: usize = 2;
const CHURNERS: usize = 450;

/// How long the churn runs: `GROUPCHATD_SOAK_SECS`, default 60.
fn soak_secs() -> u64 {
    std::env::var("GROUPCHATD_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
}

/// What the churning clients did, for the report.
#[derive(Default)]
struct Tally {
    sessions: AtomicU64,
    actions: AtomicU64,
}

/// One sample of the daemon's resources.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    rss: u64,
    fds: usize,
    clients: u64,
    sessions: u64,
}

/// A small deterministic generator (xorshift64*), one per churner.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// One churning client slot: join, chat for a while, leave, again, until `stop`.
async fn churner(addr: SocketAddr, slot: usize, stop: CancellationToken, tally: Arc<Tally>) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (slot as u64 + 1).wrapping_mul(0x100_0000_01b3));
    // Bounded in count as well as by `stop`.
    for generation in 0..100_000u64 {
        if stop.is_cancelled() {
            return;
        }
        let nick = format!("s{slot}g{generation}");
        let (r, w) = audience::join(addr, &nick).await;
        let mut stream = r.into_inner().reunite(w).unwrap();
        tally.sessions.fetch_add(1, Ordering::Relaxed);
        let actions = 3 + rng.below(8);
        let pause = Duration::from_millis(3000 + rng.below(6000));
        let mut tick = tokio::time::interval_at(Instant::now() + pause, pause);
        let mut buf = vec![0u8; 16 << 10];
        let mut done = 0;
        let mut name = nick.clone();
        while done < actions && !stop.is_cancelled() {
            let (mut r, mut w) = stream.split();
            tokio::select! {
                n = r.read(&mut buf) => {
                    assert!(n.unwrap() > 0, "{name}: disconnected by the daemon");
                }
                _ = tick.tick() => {
                    let line = match rng.below(5) {
                        0 => format!("hello {done} from {name}"),
                        1 => format!("/me waves {done}"),
                        2 => format!("/msg {} psst {done}", audience::member_nick(rng.below(LISTENERS as u64) as usize)),
                        3 => {
                            name = format!("{nick}n{done}");
                            format!("/nick {name}")
                        }
                        _ => "/who".to_owned(),
                    };
                    w.write_all(format!("{line}\n").as_bytes()).await.unwrap();
                    tally.actions.fetch_add(1, Ordering::Relaxed);
                    done += 1;
                }
                () = stop.cancelled() => {}
            }
        }
        // Leave one of three ways; read to the end so nothing we were sent resets the close.
        match rng.below(3) {
            0 => {
                stream.write_all(b"/quit soaked\n").await.unwrap();
                drain(&mut stream, &mut buf).await;
            }
            1 => {
                stream.shutdown().await.unwrap();
                drain(&mut stream, &mut buf).await;
            }
            _ => stream.set_zero_linger().unwrap(),
        }
    }
}

/// Reads until the daemon closes the connection (bounded).
async fn drain(stream: &mut tokio::net::TcpStream, buf: &mut [u8]) {
    let read_all = async {
        while let Ok(n) = stream.read(buf).await {
            if n == 0 {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, read_all)
        .await
        .expect("the daemon closes a leaving client");
}

async fn stats(d: &Daemon) -> serde_json::Value {
    let socket = d.socket.clone();
    tokio::task::spawn_blocking(move || admin_stats(&socket))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_500_clients_with_churn_all_message_kinds() {
    let _heavy = crate::support::HEAVY.lock().await;
    raise_nofile_limit();
    let secs = soak_secs();
    let dir = Scratch::new("soak");
    // Only warnings and lifecycle lines: a long run must not accumulate its log.
    let d = Daemon::start_with(&dir, "d", "flood_burst = 0\n", |cmd| {
        cmd.env("RUST_LOG", "warn,groupchatd::app=info");
    });
    let pid = d.pid();
    let spec = Spec {
        keep: false,
        line_wait: WAIT * 3,
        max_send: Duration::from_secs(secs + 300),
        ..Spec::new(LISTENERS, SENDERS, 5.0)
    };
    let aud = Audience::join(d.addr(), spec).await;
    aud.wait_lines(20).await;
    let base_fds = fd_count(pid);

    let stop = CancellationToken::new();
    let tally = Arc::new(Tally::default());
    let mut churn = JoinSet::new();
    // Ramp up at 100 connections a second, so the join storm is part of the warm-up.
    let mut ramp = tokio::time::interval(Duration::from_millis(10));
    for slot in 0..CHURNERS {
        ramp.tick().await;
        churn.spawn(churner(d.addr(), slot, stop.clone(), tally.clone()));
    }

    let started = Instant::now();
    let run = Duration::from_secs(secs);
    let every = Duration::from_secs((secs / 30).clamp(2, 60));
    let mut samples: Vec<Sample> = Vec::new();
    let mut panics = Vec::new();
    let mut tick = tokio::time::interval(every);
    eprintln!("soak: {secs} s, sampling every {every:?}");
    eprintln!(
        "{:>8} {:>10} {:>6} {:>8} {:>9}",
        "t", "rss KiB", "fds", "clients", "sessions"
    );
    while started.elapsed() < run {
        tick.tick().await;
        let s = Sample {
            at: started.elapsed(),
            rss: rss_bytes(pid),
            fds: fd_count(pid),
            clients: stats(&d).await["clients"].as_u64().unwrap(),
            sessions: tally.sessions.load(Ordering::Relaxed),
        };
        eprintln!(
            "{:>7.1}s {:>10} {:>6} {:>8} {:>9}",
            s.at.as_secs_f64(),
            s.rss / 1024,
            s.fds,
            s.clients,
            s.sessions
        );
        samples.push(s);
        panics.extend(d.take_log().into_iter().filter(|l| l.contains("panicked")));
        // A churner that failed ends the run at once.
        if let Some(done) = churn.try_join_next() {
            done.unwrap();
            panic!("a churner stopped early");
        }
    }
    stop.cancel();
    while let Some(done) = tokio::time::timeout(WAIT * 2, churn.join_next())
        .await
        .expect("churners stop")
    {
        done.unwrap();
    }

    // Descriptors back to the audience's once the churn is over (bounded poll).
    let audience = (LISTENERS + SENDERS) as u64;
    let deadline = Instant::now() + WAIT * 2;
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    let (mut clients, mut fds);
    loop {
        poll.tick().await;
        clients = stats(&d).await["clients"].as_u64().unwrap();
        fds = fd_count(pid);
        if clients == audience && fds == base_fds {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the churn: {clients} clients (want {audience}), {fds} fds (want {base_fds})"
        );
    }
    let report = aud.finish().await;

    let warm = run.mul_f64(0.2);
    let reference = samples
        .iter()
        .filter(|s| s.at <= warm)
        .map(|s| s.rss)
        .max()
        .expect("samples during the warm-up");
    let peak = samples
        .iter()
        .filter(|s| s.at > warm)
        .map(|s| s.rss)
        .max()
        .expect("samples after the warm-up");
    let drift = peak as f64 / reference as f64 - 1.0;
    eprintln!(
        "soak: {} sessions, {} actions; audience got {:?} numbered lines per sender and {} \
         others each; rss peak after warm-up {} KiB vs {} KiB during it ({:+.1}%); fds {} at \
         the start, {fds} at the end",
        tally.sessions.load(Ordering::Relaxed),
        tally.actions.load(Ordering::Relaxed),
        report.sent,
        report.heard[0].others_count,
        peak / 1024,
        reference / 1024,
        drift * 100.0,
        base_fds
    );
    assert!(
        drift < 0.10,
        "memory grew {:.1}% after the warm-up",
        drift * 100.0
    );

    let mut d = d;
    d.signal(Signal::SIGTERM);
    let code = tokio::task::spawn_blocking(move || {
        let code = d.wait_exit(Duration::from_secs(5) + WAIT);
        panics.extend(d.take_log().into_iter().filter(|l| l.contains("panicked")));
        (code, panics)
    })
    .await
    .unwrap();
    assert_eq!(code, (0, vec![]), "exit status and panics");
}
