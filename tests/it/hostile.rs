//! Hostile clients against the real daemon, while an audience of well-behaved clients chats.
//!
//! Every scenario runs the real binary with a scratch configuration, joins an [`Audience`]
//! (listeners plus paced senders of numbered lines), takes the daemon's resident memory and
//! open descriptors as a baseline after a warm-up, lets hostile clients loose, waits until they
//! are gone, and then asserts that memory and descriptors came back to the baseline and that the
//! audience received every line, exactly once, in the same order. Nothing sleeps to synchronise:
//! waits are for events (the audience seeing a notice) or bounded polls of the admin `stats`.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::process::{
    Daemon, Scratch, admin_exchange, admin_request, chatctl, fd_count, rss_bytes,
};
use crate::support::WAIT;
use crate::support::audience::{Audience, Spec, connect};

/// The daemon's resources once the audience is connected and warmed up.
#[derive(Debug, Clone, Copy)]
struct Baseline {
    rss: u64,
    fds: usize,
    clients: u64,
}

/// How far resident memory may stay above the baseline once the hostile clients are gone:
/// the larger of 25% and 2 MiB. Freed memory is not always returned to the kernel at once:
/// glibc keeps per-thread arenas and trims a heap only from its top, so buffers freed out of
/// order (send queues, per-read batches) stay resident as reusable free space. That is bounded
/// by the peak working set, not by how many clients came and went; a leak proportional to the
/// hostile traffic (10 MiB lines, thousands of connections) would exceed it.
fn rss_limit(base: u64) -> u64 {
    base + (base / 4).max(2 << 20)
}

/// A daemon on `config`, with an audience joined and warmed up, and its baseline.
async fn room(dir: &Scratch, config: &str, spec: Spec) -> (Daemon, Audience, Baseline) {
    let d = Daemon::start(dir, "d", config);
    let aud = Audience::join(d.addr(), spec).await;
    // Warm-up: every audience session has read, published and written (per-thread read
    // buffers, outbox vectors and the hub's tables are at their working size).
    aud.wait_lines(2 * aud.rate() as u64).await;
    let base = Baseline {
        rss: rss_bytes(d.pid()),
        fds: fd_count(d.pid()),
        clients: (spec.members + spec.senders) as u64,
    };
    (d, aud, base)
}

/// The admin `stats` result, fetched off the async threads; None while the daemon answers
/// `busy` (all admin slots taken).
async fn stats(d: &Daemon) -> Option<serde_json::Value> {
    let socket = d.socket.clone();
    let reply = tokio::task::spawn_blocking(move || admin_request(&socket, r#"{"cmd":"stats"}"#))
        .await
        .unwrap();
    if reply["ok"] == true {
        Some(reply["result"].clone())
    } else {
        assert_eq!(reply["error"]["code"], "busy", "{reply}");
        None
    }
}

/// Polls (bounded by `bound`, every 50 ms) until `probe` returns true; returns the last value seen.
async fn poll<T: std::fmt::Debug>(
    what: &str,
    bound: Duration,
    mut probe: impl AsyncFnMut() -> (bool, T),
) -> T {
    let deadline = Instant::now() + bound;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let (done, value) = probe().await;
        if done {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {value:?} after {bound:?}"
        );
    }
}

/// Waits until only the audience is connected, then until the daemon's descriptors are back to
/// the baseline exactly and its memory within [`rss_limit`]. Prints the figures.
async fn back_to_baseline(test: &str, d: &Daemon, base: Baseline) {
    let pid = d.pid();
    poll("connections back to the audience", WAIT * 2, async || {
        let clients = stats(d).await.map(|s| s["clients"].as_u64().unwrap());
        (clients == Some(base.clients), clients)
    })
    .await;
    // Closed connections may still be lingering (at most 2 s) after they left the room.
    let fds = poll("descriptors back to the baseline", WAIT, async || {
        let fds = fd_count(pid);
        (fds == base.fds, fds)
    })
    .await;
    let limit = rss_limit(base.rss);
    let rss = poll(
        "memory back under the limit",
        Duration::from_secs(5),
        async || {
            let rss = rss_bytes(pid);
            (rss <= limit, rss)
        },
    )
    .await;
    eprintln!(
        "{test}: baseline rss {} KiB, fds {}; after rss {} KiB (limit {} KiB), fds {fds}",
        base.rss / 1024,
        base.fds,
        rss / 1024,
        limit / 1024
    );
}

/// Connects with a small receive buffer (so the daemon's output backs up quickly when we stop
/// reading) and joins as `nick`, reading up to the end of the welcome.
pub(crate) async fn join_small_buffer(addr: SocketAddr, nick: &str) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = tokio::time::timeout(WAIT, sock.connect(addr))
        .await
        .unwrap()
        .unwrap();
    join_stream(stream, nick).await
}

/// Joins on an open connection as `nick`, reading exactly up to the end of the welcome.
pub(crate) async fn join_stream(mut stream: TcpStream, nick: &str) -> TcpStream {
    read_until(&mut stream, b"*** Choose a nickname:\r\n").await;
    stream
        .write_all(format!("{nick}\n").as_bytes())
        .await
        .unwrap();
    read_until(&mut stream, b"*** Type /help for commands.\r\n").await;
    stream
}

/// Reads byte by byte (so nothing after it is consumed) until `marker` has been read.
pub(crate) async fn read_until(stream: &mut TcpStream, marker: &[u8]) {
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !seen.ends_with(marker) {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut b))
            .await
            .expect("greeting within the bound")
            .unwrap();
        assert!(n == 1, "EOF before {:?}", String::from_utf8_lossy(marker));
        seen.push(b[0]);
    }
}

/// The most a stalled connection can absorb before the daemon's writes to it block: the largest
/// send buffer the kernel may grow a socket to (net.ipv4.tcp_wmem) plus our receive buffer.
pub(crate) fn kernel_buffers() -> u64 {
    let wmem = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").unwrap_or_default();
    let max: u64 = wmem
        .split_whitespace()
        .last()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4 << 20);
    max + (64 << 10)
}

#[tokio::test]
async fn readers_that_never_read_or_read_a_byte_a_second_are_cut_off() {
    let dir = Scratch::new("h-readers");
    let config = "flood_burst = 0\nwrite_timeout_secs = 2\nmax_queue_bytes = 65536\n";
    // A stalled reader is only noticed once the kernel stops taking its output (several MiB of
    // socket buffer), so the room talks fast here: 2 x 100 lines/s of 3 KB.
    let spec = Spec {
        pad: 3000,
        ..Spec::new(4, 2, 100.0)
    };
    let (d, aud, base) = room(&dir, config, spec).await;
    let room_bytes_per_sec = aud.rate() * 3000.0;
    let cut_off_within =
        WAIT + Duration::from_secs_f64(2.0 * kernel_buffers() as f64 / room_bytes_per_sec);

    // Two that never read anything; one that also asks for output (/help) it never reads.
    let mut never = Vec::new();
    for i in 0..2 {
        never.push(join_small_buffer(d.addr(), &format!("never{i}")).await);
    }
    let mut asks = join_small_buffer(d.addr(), "asks").await;
    asks.write_all("/help\n".repeat(20_000).as_bytes())
        .await
        .unwrap();
    never.push(asks);
    // Two that read one byte a second until the daemon has cut them off (bounded: 60 bytes).
    let done = CancellationToken::new();
    let mut trickle = Vec::new();
    for i in 0..2 {
        let mut s = join_small_buffer(d.addr(), &format!("trickle{i}")).await;
        let done = done.clone();
        trickle.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            for _ in 0..60 {
                tokio::select! {
                    () = done.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let mut b = [0u8; 1];
                if !matches!(s.read(&mut b).await, Ok(1)) {
                    return;
                }
            }
        }));
    }
    for nick in ["asks", "never0", "never1", "trickle0", "trickle1"] {
        let left = aud
            .wait_notice_prefix(&format!("*** {nick} left ("), cut_off_within)
            .await;
        assert!(
            left.starts_with(&format!("*** {nick} left (too slow: ")),
            "{left}"
        );
    }
    drop(never);
    done.cancel();
    for t in trickle {
        t.await.unwrap();
    }
    back_to_baseline("never/trickle readers", &d, base).await;
    let report = aud.finish().await;
    eprintln!("audience: {:?} lines sent", report.sent);
}

/// A hostile client that still reads (so it is not cut off as too slow): its input is drained
/// in a task that keeps the `***` notices it gets and counts everything else.
pub(crate) struct Hostile {
    w: OwnedWriteHalf,
    reader: JoinHandle<Vec<String>>,
}

impl Hostile {
    /// Joins as `nick` and starts draining.
    pub(crate) async fn join(addr: SocketAddr, nick: &str) -> Hostile {
        Hostile::drained(join_stream(connect(addr).await, nick).await)
    }

    pub(crate) fn drained(stream: TcpStream) -> Hostile {
        let (r, w) = stream.into_split();
        let reader = tokio::spawn(async move {
            let mut r = tokio::io::BufReader::new(r);
            let mut notices = Vec::new();
            let mut line = Vec::new();
            // Bounded by the test: every hostile client is closed (and so reaches EOF) before
            // the test ends; the timeout only turns a hang into a failure.
            loop {
                line.clear();
                match tokio::time::timeout(WAIT * 6, r.read_until(b'\n', &mut line)).await {
                    Err(_) => panic!("a hostile client's connection was never closed"),
                    Ok(Ok(0) | Err(_)) => return notices,
                    Ok(Ok(_)) if line.starts_with(b"*** ") => {
                        notices.push(String::from_utf8_lossy(&line).trim_end().to_owned())
                    }
                    Ok(Ok(_)) => {}
                }
            }
        });
        Hostile { w, reader }
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.unwrap();
    }

    /// Half-closes (like `nc -N`) and waits until the daemon closes too; returns the notices.
    pub(crate) async fn close(mut self) -> Vec<String> {
        let _ = self.w.shutdown().await;
        tokio::time::timeout(WAIT * 2, self.reader)
            .await
            .expect("the daemon closes after our half-close")
            .unwrap()
    }
}

/// A small deterministic generator (xorshift64*), so failures can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 32) as u8).collect()
    }
}

#[tokio::test]
async fn slowloris_writers_and_a_ten_mib_line_are_harmless() {
    let dir = Scratch::new("h-slowloris");
    let config = "flood_burst = 0\nhandshake_timeout_secs = 3\n";
    let (d, aud, base) = room(&dir, config, Spec::new(6, 2, 20.0)).await;

    // Ten never finish their nickname: a byte a second, no newline (bounded: 30 bytes). The
    // handshake timeout applies however busy they look.
    let mut unnamed = Vec::new();
    for _ in 0..10 {
        let (r, mut w) = connect(d.addr()).await.into_split();
        let writer = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            for b in b"slowpoke".iter().cycle().take(30) {
                tick.tick().await;
                if w.write_all(&[*b]).await.is_err() {
                    return;
                }
            }
        });
        unnamed.push((r, writer));
    }
    // Ten join, then say five bytes, a byte a second, without a newline; then half-close, so
    // the unterminated line is delivered (as `nc -N` would), once.
    let mut dribblers = Vec::new();
    for i in 0..10 {
        let mut h = Hostile::join(d.addr(), &format!("slow{i}")).await;
        dribblers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            for b in format!("s{i:02}xy").bytes() {
                tick.tick().await;
                h.send(&[b]).await;
            }
            h.close().await
        }));
    }
    // Meanwhile, a 10 MiB line without a newline: refused once, never buffered.
    let mut big = Hostile::join(d.addr(), "big").await;
    let chunk = vec![b'q'; 1 << 20];
    for _ in 0..10 {
        big.send(&chunk).await;
    }
    let during = rss_bytes(d.pid());
    big.send(b"\nafter the big line\n").await;
    aud.wait_other("<big> after the big line", WAIT).await;
    eprintln!("rss after a 10 MiB line: {} KiB", during / 1024);
    assert!(
        during <= rss_limit(base.rss),
        "a 10 MiB line took memory: {during} > {}",
        rss_limit(base.rss)
    );

    for (mut r, writer) in unnamed {
        let mut got = String::new();
        tokio::time::timeout(WAIT, r.read_to_string(&mut got))
            .await
            .expect("the handshake timeout closes the connection")
            .unwrap();
        assert!(
            got.ends_with("*** Choose a nickname:\r\n*** No nickname within 3 s; goodbye.\r\n"),
            "{got:?}"
        );
        writer.await.unwrap();
    }
    for (i, t) in dribblers.into_iter().enumerate() {
        let notices = tokio::time::timeout(WAIT * 2, t).await.unwrap().unwrap();
        assert!(
            notices.iter().all(|n| !n.contains("Line too long")),
            "{notices:?}"
        );
        aud.wait_notice(&format!("*** slow{i} left (connection closed)"), WAIT)
            .await;
    }
    let notices = big.close().await;
    let too_long = "*** Line too long (limit 4096 bytes); it was not sent.";
    assert_eq!(
        notices.iter().filter(|n| *n == too_long).count(),
        1,
        "{notices:?}"
    );
    back_to_baseline("slowloris + 10 MiB line", &d, base).await;

    let report = aud.finish().await;
    for i in 0..10 {
        let line = format!("<slow{i}> s{i:02}xy");
        let n = report.others().iter().filter(|l| **l == line).count();
        assert_eq!(n, 1, "{line} delivered once: {:?}", report.others());
    }
    assert!(report.others().iter().all(|l| !l.contains("qqqq")));
}

#[tokio::test]
async fn floods_from_one_and_from_many_are_slowed_and_lose_nothing() {
    let dir = Scratch::new("h-flood");
    // Flood control on (burst 10, then 100 lines/s); the audience's senders stay under it.
    let config = "flood_burst = 10\nflood_rate = 100.0\n";
    let (d, aud, base) = room(&dir, config, Spec::new(6, 2, 20.0)).await;

    let mut flooders = Vec::new();
    let mut one = Hostile::join(d.addr(), "flood").await;
    let lines: String = (0..600).map(|n| format!("f {n}\n")).collect();
    one.send(lines.as_bytes()).await;
    flooders.push(("flood".to_owned(), 600, one));
    for k in 0..8 {
        let nick = format!("many{k}");
        let h = Hostile::join(d.addr(), &nick).await;
        flooders.push((nick, 150, h));
    }
    // The many send at once, each 150 lines in one write.
    for (_, n, h) in flooders.iter_mut().skip(1) {
        let lines: String = (0..*n).map(|i| format!("f {i}\n")).collect();
        h.send(lines.as_bytes()).await;
    }
    // Slowed, not dropped: each flooder's last line arrives (bounded by the flood rate), then
    // it can still talk.
    let bound = WAIT + Duration::from_secs(600 / 100 * 2);
    for (nick, n, h) in &mut flooders {
        aud.wait_other(&format!("<{nick}> f {}", *n - 1), bound)
            .await;
        h.send(b"still here\n").await;
    }
    for (nick, _, h) in flooders.drain(..) {
        aud.wait_other(&format!("<{nick}> still here"), WAIT).await;
        h.close().await;
        aud.wait_notice(&format!("*** {nick} left (connection closed)"), WAIT)
            .await;
    }
    let throttled = stats(&d).await.unwrap()["throttled_senders"]
        .as_u64()
        .unwrap();
    assert!(throttled >= 9, "every flooder was throttled: {throttled}");
    back_to_baseline("floods", &d, base).await;

    let report = aud.finish().await;
    for (nick, n) in
        std::iter::once(("flood".to_owned(), 600)).chain((0..8).map(|k| (format!("many{k}"), 150)))
    {
        for h in &report.heard {
            let prefix = format!("<{nick}> ");
            let got: Vec<&str> = h
                .others
                .iter()
                .filter_map(|l| l.strip_prefix(&prefix))
                .collect();
            let want: Vec<String> = (0..n)
                .map(|i| format!("f {i}"))
                .chain(["still here".to_owned()])
                .collect();
            assert_eq!(got, want, "{}: {nick}'s lines, all, in order", h.nick);
        }
    }
}

#[tokio::test]
async fn connect_disconnect_churn_leaves_nothing_behind() {
    const CONNECTIONS: usize = 1200;
    let dir = Scratch::new("h-churn");
    let (d, aud, base) = room(&dir, "flood_burst = 0\n", Spec::new(6, 2, 20.0)).await;
    let addr = d.addr();

    // 300 connections a second, at most 64 open at once, six behaviours in turn.
    let open = Arc::new(Semaphore::new(64));
    let mut tasks = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for i in 0..CONNECTIONS {
        if i % 3 == 0 {
            tick.tick().await;
        }
        let permit = open.clone().acquire_owned().await.unwrap();
        tasks.spawn(async move {
            let _permit = permit;
            let nick = format!("c{i}");
            let outcome = tokio::time::timeout(WAIT, churn_one(addr, i % 6, &nick)).await;
            outcome.unwrap_or_else(|_| panic!("churn connection {i} (kind {}) hung", i % 6));
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    back_to_baseline("churn", &d, base).await;
    let total = stats(&d).await.unwrap()["connections_total"]
        .as_u64()
        .unwrap();
    assert!(total >= base.clients + CONNECTIONS as u64, "{total}");

    let report = aud.finish().await;
    for h in &report.heard {
        for i in (0..CONNECTIONS).filter(|i| i % 6 >= 2) {
            let joined = format!("*** c{i} joined");
            let left = format!("*** c{i} left (");
            let count = |p: &dyn Fn(&String) -> bool| h.notices.iter().filter(|n| p(n)).count();
            assert_eq!(count(&|n| *n == joined), 1, "{}: {joined}", h.nick);
            assert_eq!(count(&|n| n.starts_with(&left)), 1, "{}: {left}…", h.nick);
        }
        for i in (0..CONNECTIONS).filter(|i| i % 6 == 3 || i % 6 == 4) {
            let said = if i % 6 == 3 { "hello from" } else { "hi from" };
            let line = format!("<c{i}> {said} c{i}");
            let n = h.others.iter().filter(|l| **l == line).count();
            assert_eq!(n, 1, "{}: {line}", h.nick);
        }
    }
}

/// One short-lived connection of the churn test.
async fn churn_one(addr: SocketAddr, kind: usize, nick: &str) {
    let stream = connect(addr).await;
    match kind {
        // Gone before reading the greeting.
        0 => drop(stream),
        // Reset at once.
        1 => {
            stream.set_zero_linger().unwrap();
            drop(stream);
        }
        // Joins and closes.
        2 => drop(join_stream(stream, nick).await),
        // Joins, says something and quits politely.
        3 => {
            let mut s = join_stream(stream, nick).await;
            let bye = format!("hello from {nick}\n/quit\n");
            s.write_all(bye.as_bytes()).await.unwrap();
            let mut rest = String::new();
            s.read_to_string(&mut rest).await.unwrap();
            // Not necessarily the last line: see quit_and_kick_notices_are_the_last_line.
            assert!(rest.contains("*** Goodbye.\r\n"), "{rest:?}");
        }
        // Pipelines nickname and line, half-closes, reads everything (`printf … | nc -N`).
        4 => {
            let mut s = stream;
            let script = format!("{nick}\nhi from {nick}\n");
            s.write_all(script.as_bytes()).await.unwrap();
            s.shutdown().await.unwrap();
            let mut rest = String::new();
            s.read_to_string(&mut rest).await.unwrap();
            assert!(rest.contains(&format!("*** Welcome, {nick}!")), "{rest:?}");
        }
        // Joins and resets.
        _ => {
            let s = join_stream(stream, nick).await;
            s.set_zero_linger().unwrap();
            drop(s);
        }
    }
}

#[tokio::test]
async fn connections_reset_mid_line_are_cleaned_up_and_never_relayed() {
    let dir = Scratch::new("h-reset");
    let (d, aud, base) = room(&dir, "flood_burst = 0\n", Spec::new(6, 2, 20.0)).await;
    for i in 0..10 {
        let nick = format!("rst{i}");
        let mut s = join_stream(connect(d.addr()).await, &nick).await;
        s.write_all(format!("complete {i}\n").as_bytes())
            .await
            .unwrap();
        // Once the complete line was relayed, the daemon is reading us: now half a line, a
        // large one for some, and a reset.
        aud.wait_other(&format!("<{nick}> complete {i}"), WAIT)
            .await;
        let partial = format!(
            "partial {i} {}",
            "p".repeat(if i % 2 == 0 { 10 } else { 3000 })
        );
        s.write_all(partial.as_bytes()).await.unwrap();
        s.set_zero_linger().unwrap();
        drop(s);
        aud.wait_notice(&format!("*** {nick} left (connection closed)"), WAIT)
            .await;
    }
    // Resets in the middle of choosing a nickname, too.
    for i in 0..10 {
        let mut s = connect(d.addr()).await;
        read_until(&mut s, b"*** Choose a nickname:\r\n").await;
        s.write_all(format!("half{i}").as_bytes()).await.unwrap();
        s.set_zero_linger().unwrap();
    }
    back_to_baseline("resets mid-line", &d, base).await;
    let report = aud.finish().await;
    assert!(
        report.others().iter().all(|l| !l.contains("partial")),
        "{:?}",
        report.others()
    );
    assert!(report.notices().iter().all(|n| !n.contains("half")));
}

/// Makes the kernel drop every packet that arrives for `stream`, before TCP sees it: the peer
/// then gets no ACK, no window update and no reset from us, exactly as if we had vanished
/// without a FIN (a crashed host, a pulled cable, a NAT that forgot us). Nothing leaves our side
/// either as long as we do not write or close. A classic BPF socket filter ("return 0": keep no
/// bytes of any packet) needs no privilege, unlike a firewall rule or a network namespace.
#[allow(unsafe_code)]
fn vanish(stream: &TcpStream) {
    use nix::libc;
    use std::os::fd::AsRawFd;
    /// BPF_RET | BPF_K: return the constant `k`.
    const RET_K: u16 = 0x06;
    let code = [libc::sock_filter {
        code: RET_K,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let prog = libc::sock_fprog {
        len: code.len() as u16,
        filter: code.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` and the program it points to live across the call and match the sizes
    // given; the kernel copies the program and keeps no pointer to our memory.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&raw const prog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "SO_ATTACH_FILTER: {}",
        std::io::Error::last_os_error()
    );
}

#[tokio::test]
async fn half_open_connections_are_reaped_by_keepalive() {
    let dir = Scratch::new("h-halfopen");
    // Keepalive after 1 s of silence, then 6 probes 1 s apart: a dead peer is noticed in ~7 s.
    let config = "flood_burst = 0\ntcp_keepalive_secs = 1\nhandshake_timeout_secs = 0\n";
    let (d, aud, base) = room(&dir, config, Spec::new(4, 2, 20.0)).await;
    // Peers that connected, got the greeting, and vanished: nothing is owed to them, so only
    // keepalive can tell they are gone (there is no handshake timeout here).
    let mut ghosts = Vec::new();
    for _ in 0..3 {
        let mut s = connect(d.addr()).await;
        read_until(&mut s, b"*** Choose a nickname:\r\n").await;
        vanish(&s);
        ghosts.push(s);
    }
    back_to_baseline("half-open (keepalive)", &d, base).await;
    drop(ghosts);
    aud.finish().await;
}

#[tokio::test]
async fn half_open_member_is_reaped_while_the_room_chats() {
    let dir = Scratch::new("h-halfmember");
    let config = "flood_burst = 0\ntcp_keepalive_secs = 1\nwrite_timeout_secs = 2\n";
    let (d, aud, base) = room(&dir, config, Spec::new(4, 2, 20.0)).await;
    let ghost = join_stream(connect(d.addr()).await, "ghost").await;
    vanish(&ghost);
    // The room keeps sending to the ghost, so there is always unacknowledged data: the kernel
    // sends no keepalive probe then, only retransmissions (with exponential backoff, for
    // tcp_retries2 = 15 rounds), and the send buffer (MiBs) takes many minutes to fill at
    // this rate, so the write timeout does not fire either. The daemon must still notice
    // within its keepalive time (1 s + 6 x 1 s); TCP_USER_TIMEOUT would bound it.
    let left = aud.wait_notice_prefix("*** ghost left (", WAIT * 2).await;
    eprintln!("{left}");
    drop(ghost);
    back_to_baseline("half-open member", &d, base).await;
    aud.finish().await;
}

#[tokio::test]
async fn random_bytes_bad_utf8_telnet_storms_and_escapes_reach_nobody_raw() {
    let dir = Scratch::new("h-bytes");
    // Long lines are compared whole, so the server does not wrap them here (see forgery.rs).
    let config = "flood_burst = 0\nwrap_width = 0\n";
    let (d, aud, base) = room(&dir, config, Spec::new(6, 2, 20.0)).await;
    // Every line any audience client receives is checked as it arrives: CRLF, valid UTF-8,
    // no control, escape or bidi character. Here we also check what the survivors look like.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    // Random bytes, after joining and while still choosing a nickname.
    let mut rnd = Hostile::join(d.addr(), "rnd").await;
    for _ in 0..64 {
        rnd.send(&rng.bytes(4096)).await;
    }
    let mut pre = Hostile::drained(connect(d.addr()).await);
    pre.send(&rng.bytes(64 << 10)).await;

    // Invalid UTF-8 of every kind (no 0xFF: that is telnet's IAC).
    let mut utf = Hostile::join(d.addr(), "utf").await;
    let bad: [&[u8]; 8] = [
        b"caf\xe9",
        b"\xc0\xaf overlong",
        b"\xed\xa0\x80 surrogate",
        b"\xe2\x82 truncated",
        b"\x80\x80 continuation",
        b"\xf8\x88\x80\x80\x80 five",
        b"\xf4\x90\x80\x80 beyond",
        b"\xfe\xfd",
    ];
    for (i, b) in bad.iter().enumerate() {
        utf.send(&[format!("u{i} ").as_bytes(), b, b"\n"].concat())
            .await;
    }

    // A telnet negotiation storm (about 1 MiB of commands) with a numbered line every 1000.
    let mut tel = Hostile::join(d.addr(), "tel").await;
    let commands: [&[u8]; 6] = [
        b"\xff\xfb\x01",
        b"\xff\xfd\x03",
        b"\xff\xfa\x18\x00xterm-256color\xff\xf0",
        b"\xff\xff",
        b"\xff\xf1",
        b"\xff\xfe\x22",
    ];
    let mut storm = Vec::new();
    for i in 0..100_000 {
        storm.extend_from_slice(commands[i % commands.len()]);
        if i % 1000 == 999 {
            storm.extend_from_slice(format!("t{}\r\n", i / 1000).as_bytes());
        }
    }
    tel.send(&storm).await;

    // Terminal escape sequences: colours, title, cursor moves, DCS, bidi overrides.
    let mut esc = Hostile::join(d.addr(), "esc").await;
    let escapes: [&[u8]; 8] = [
        b"\x1b[31mred\x1b[0m",
        b"\x1b]0;pwned\x07title",
        b"\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\",
        b"\x1bP+q544e\x1b\\dcs",
        b"\x1b[2J\x1b[Hclear",
        "\u{202e}reversed\u{202c} \u{2066}isolate\u{2069}".as_bytes(),
        "c1 \u{9b}31m csi".as_bytes(),
        b"bs\x08\x08 del\x7f tab\tx bell\x07 cr\rlf",
    ];
    for (i, e) in escapes.iter().enumerate() {
        esc.send(&[format!("e{i} ").as_bytes(), e, b"\n"].concat())
            .await;
    }

    // Each then leaves any telnet command or overlong line it may be inside (a subnegotiation
    // is at most 512 bytes) and says a last line, which must arrive.
    for (nick, h) in [
        ("rnd", &mut rnd),
        ("utf", &mut utf),
        ("tel", &mut tel),
        ("esc", &mut esc),
    ] {
        h.send(&[vec![b'a'; 600], b"\n".to_vec()].concat()).await;
        h.send(format!("done {nick}\n").as_bytes()).await;
        aud.wait_other(&format!("<{nick}> done {nick}"), WAIT).await;
    }
    for h in [rnd, pre, utf, tel, esc] {
        h.close().await;
    }
    back_to_baseline("random/UTF-8/telnet/escapes", &d, base).await;
    let report = aud.finish().await;

    let said = |nick: &str| -> Vec<String> {
        let prefix = format!("<{nick}> ");
        let lines = report
            .others()
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix));
        lines.map(str::to_owned).collect()
    };
    let sanitised = |raw: &[u8]| {
        let mut out = String::new();
        groupchatd::protocol::sanitise_into(raw, &mut out);
        out
    };
    let want_utf: Vec<String> = bad
        .iter()
        .enumerate()
        .map(|(i, b)| sanitised(&[format!("u{i} ").as_bytes(), b].concat()))
        .chain(["a".repeat(600), "done utf".into()])
        .collect();
    assert_eq!(said("utf"), want_utf);
    assert!(said("utf")[0].contains('\u{FFFD}'));
    let want_tel: Vec<String> = (0..100)
        .map(|i| format!("t{i}"))
        .chain(["a".repeat(600), "done tel".into()])
        .collect();
    assert_eq!(said("tel"), want_tel);
    let want_esc: Vec<String> = escapes
        .iter()
        .enumerate()
        .map(|(i, e)| sanitised(&[format!("e{i} ").as_bytes(), e].concat()))
        .chain(["a".repeat(600), "done esc".into()])
        .collect();
    assert_eq!(said("esc"), want_esc);
    assert_eq!(said("esc")[0], "e0 red");
    assert_eq!(said("rnd").last().map(String::as_str), Some("done rnd"));
}

/// Opens `n` connections at once and returns what each received before the daemon closed it.
async fn refused(addr: SocketAddr, n: usize) -> Vec<String> {
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        tasks.spawn(async move {
            let mut s = connect(addr).await;
            let mut got = Vec::new();
            let read = tokio::time::timeout(WAIT, s.read_to_end(&mut got)).await;
            // A reset after the line is also a close.
            assert!(read.is_ok(), "a refused connection was not closed");
            String::from_utf8_lossy(&got).into_owned()
        });
    }
    let mut all = Vec::new();
    while let Some(got) = tasks.join_next().await {
        all.push(got.unwrap());
    }
    all
}

#[tokio::test]
async fn max_clients_and_per_ip_limits_refuse_only_newcomers() {
    let dir = Scratch::new("h-limits");
    let spec = Spec::new(6, 2, 20.0);
    let cap = spec.members + spec.senders + 2;
    // connect_rate off: this storm is about the slot limits, not the connection rate.
    let per_ip = format!(
        "flood_burst = 0\nconnect_rate = 0\nmax_clients_per_ip = {cap}\nper_ip_exempt = []\n"
    );
    let (d, aud, base) = room(&dir, &per_ip, spec).await;
    // Two connections fill the per-address quota; a storm of newcomers is turned away.
    let mut squatters = Vec::new();
    for _ in 0..2 {
        let mut s = connect(d.addr()).await;
        read_until(&mut s, b"*** Choose a nickname:\r\n").await;
        squatters.push(s);
    }
    for got in refused(d.addr(), 100).await {
        assert_eq!(got, "*** too many connections from your address\r\n");
    }
    // Now the same with max_clients (reloaded), and no per-address limit.
    dir.file("d.toml", &format!("flood_burst = 0\nmax_clients = {cap}\n"));
    let socket = d.socket.clone();
    let out = tokio::task::spawn_blocking(move || chatctl(&socket, &["reload"]))
        .await
        .unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    for got in refused(d.addr(), 100).await {
        assert_eq!(got, "*** server full\r\n");
    }
    let rejected = stats(&d).await.unwrap()["rejected_connections"]
        .as_u64()
        .unwrap();
    assert_eq!(rejected, 200);
    drop(squatters);
    back_to_baseline("max_clients + per-IP", &d, base).await;
    aud.finish().await;
}

/// Garbage, random bytes and a 1 MiB request on the admin socket (blocking).
fn admin_garbage(socket: &Path) {
    // Garbage, then a good request on the same connection.
    let replies = admin_exchange(
        socket,
        b"garbage\n\xff\xfe\x00\n{\"cmd\":\"frob\"}\n{\"cmd\":\"list\",\"x\":1}\n{\"version\":9,\"cmd\":\"list\"}\n{\"cmd\":\"stats\"}\n",
        6,
    );
    let codes: Vec<_> = replies.iter().map(|r| r["error"]["code"].clone()).collect();
    assert_eq!(
        codes[..5],
        [
            "bad_request",
            "bad_request",
            "bad_request",
            "bad_request",
            "unsupported_version"
        ]
    );
    assert_eq!(replies[5]["ok"], true);

    // 16 KiB of random bytes (no newline, which would make short lines): one error reply, and
    // the same connection then still answers.
    let mut rng = Rng(42);
    let junk: Vec<u8> = rng.bytes(16 << 10).into_iter().map(|b| b | 0x80).collect();
    let replies = admin_exchange(socket, &[&junk[..], b"\n{\"cmd\":\"stats\"}\n"].concat(), 2);
    assert_eq!(replies[0]["error"]["code"], "bad_request", "{}", replies[0]);
    assert_eq!(replies[1]["ok"], true);

    // 1 MiB without a newline: refused as too large after 64 KiB, connection closed.
    let stream = UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    let writer = stream.try_clone().unwrap();
    let pusher = std::thread::spawn(move || {
        // Fails with EPIPE/ECONNRESET once the daemon has given up on us.
        let _ = (&writer).write_all(&vec![b'x'; 1 << 20]);
    });
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).unwrap();
    let reply: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(reply["error"]["code"], "too_large", "{reply}");
    pusher.join().unwrap();
}

/// Of `idle` admin connections, those the daemon still serves (a `list` is answered); the others
/// must have been closed by it (EOF or reset). Blocking.
fn admin_served(idle: &[UnixStream]) -> usize {
    idle.iter()
        .filter(|s| {
            s.set_read_timeout(Some(WAIT)).unwrap();
            let _ = (&**s).write_all(b"{\"cmd\":\"list\"}\n");
            let mut line = String::new();
            match BufReader::new(&**s).read_line(&mut line) {
                Ok(0) | Err(_) if line.is_empty() => false,
                _ => {
                    assert!(line.contains("\"ok\":true"), "{line}");
                    true
                }
            }
        })
        .count()
}

/// Waits (bounded poll) until the daemon has exactly `fds` descriptors open again.
async fn wait_fds(d: &Daemon, fds: usize) {
    let pid = d.pid();
    poll("descriptors back to the baseline", WAIT, async || {
        let now = fd_count(pid);
        (now == fds, now)
    })
    .await;
}

#[tokio::test]
async fn admin_socket_abuse_does_not_disturb_the_room() {
    let dir = Scratch::new("h-admin");
    let config = "flood_burst = 0\nadmin_socket_mode = \"0666\"\n";
    let (d, aud, base) = room(&dir, config, Spec::new(6, 2, 20.0)).await;
    // World-connectable, so a stranger's refusal comes from the SO_PEERCRED check.
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let socket = d.socket.clone();
    tokio::task::spawn_blocking(move || admin_garbage(&socket))
        .await
        .unwrap();
    // Every admin connection so far is closed (and its slot free) once its descriptor is.
    wait_fds(&d, base.fds).await;
    // Fifty idle admin connections: each newcomer closes the longest-idle one, so eight stay open,
    // and chatctl still gets through (closing one more).
    let idle: Vec<UnixStream> = (0..50)
        .map(|_| UnixStream::connect(&d.socket).unwrap())
        .collect();
    wait_fds(&d, base.fds + 8).await;
    let socket = d.socket.clone();
    let out = tokio::task::spawn_blocking(move || chatctl(&socket, &["stats"]))
        .await
        .unwrap();
    assert_eq!(out.code, 0, "{} {}", out.stdout, out.stderr);
    wait_fds(&d, base.fds + 7).await;
    let (served, idle) = tokio::task::spawn_blocking(move || (admin_served(&idle), idle))
        .await
        .unwrap();
    assert_eq!(served, 7);
    drop(idle);
    wait_fds(&d, base.fds).await;
    // A uid that may not use the socket (root is needed to run chatctl as another user).
    if nix::unistd::geteuid().is_root() {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(crate::process::CHATCTL);
        cmd.arg("--socket")
            .arg(&d.socket)
            .arg("list")
            .uid(65534)
            .gid(65534);
        let out = tokio::task::spawn_blocking(move || crate::process::chatctl_with(&mut cmd))
            .await
            .unwrap();
        assert_eq!(out.code, 77, "{} {}", out.stdout, out.stderr);
        d.log_line("uid=65534");
    } else {
        eprintln!("not root: the disallowed-uid case is skipped");
    }
    back_to_baseline("admin abuse", &d, base).await;
    aud.finish().await;
}

/// Joins as `nick` and reads everything until the daemon closes the connection; returns the
/// last line received.
async fn last_line_after(addr: SocketAddr, nick: &str, script: &str) -> String {
    let mut s = join_stream(connect(addr).await, nick).await;
    s.write_all(script.as_bytes()).await.unwrap();
    let mut rest = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut rest))
        .await
        .expect("closed within the bound")
        .unwrap();
    rest.lines().last().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn quit_and_kick_notices_are_the_last_line() {
    let dir = Scratch::new("h-lastline");
    // A busy room: 4 senders x 200 lines/s.
    let (d, aud, _) = room(&dir, "flood_burst = 0\n", Spec::new(2, 4, 200.0)).await;
    let mut wrong = Vec::new();
    // Eight at a time, so the daemon's threads are busy with other sessions while one quits.
    let mut quitters = JoinSet::new();
    let addr = d.addr();
    for i in 0..600 {
        if quitters.len() == 8
            && let Some(last) = quitters.join_next().await
        {
            wrong.extend(last.unwrap());
        }
        quitters.spawn(async move {
            let last = last_line_after(addr, &format!("q{i}"), "/quit\n").await;
            (last != "*** Goodbye.").then(|| format!("q{i}: {last:?}"))
        });
    }
    while let Some(last) = quitters.join_next().await {
        wrong.extend(last.unwrap());
    }
    let mut kicked = JoinSet::new();
    for i in 0..400 {
        if kicked.len() == 8
            && let Some(last) = kicked.join_next().await
        {
            wrong.extend(last.unwrap());
        }
        let socket = d.socket.clone();
        kicked.spawn(async move {
            let nick = format!("k{i}");
            let mut s = join_stream(connect(addr).await, &nick).await;
            let kick = format!(r#"{{"cmd":"kick","target":"{nick}"}}"#);
            let reply = tokio::task::spawn_blocking(move || admin_request(&socket, &kick))
                .await
                .unwrap();
            assert_eq!(reply["ok"], true, "{reply}");
            let mut rest = String::new();
            tokio::time::timeout(WAIT, s.read_to_string(&mut rest))
                .await
                .expect("closed within the bound")
                .unwrap();
            let last = rest.lines().last().unwrap_or_default();
            (last != "*** you were kicked").then(|| format!("{nick}: {last:?}"))
        });
    }
    while let Some(last) = kicked.join_next().await {
        wrong.extend(last.unwrap());
    }
    aud.finish().await;
    assert!(
        wrong.is_empty(),
        "{} final notices were not last: {wrong:?}",
        wrong.len()
    );
}
