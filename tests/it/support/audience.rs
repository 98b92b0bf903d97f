//! The audience of the reliability suites: well-behaved clients that chat while a test does
//! something hostile, and that must then have received every line, once, in the same order.
//!
//! K members only listen; S senders also send numbered lines (`seq J N pad`) at a steady pace
//! until [`Audience::finish`], then a last `end J COUNT` line. Every connection reads in its own
//! task and checks every line it gets: CRLF-terminated, UTF-8, no control or bidi characters.
//! Per sender, a reader must see 0, 1, 2, … with no gap or duplicate, and all readers must see
//! the senders' lines interleaved identically (the hub's total order); lines from anyone else
//! (hostile clients) and `***` notices are recorded apart.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::WAIT;

/// Connects to the daemon under test (bounded).
pub async fn connect(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect within the bound")
        .expect("connect")
}

/// The shape of an audience.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Clients that only listen.
    pub members: usize,
    /// Clients that listen and send numbered lines.
    pub senders: usize,
    /// Lines per second, per sender.
    pub per_sec: f64,
    /// Filler bytes in each numbered line.
    pub pad: usize,
    /// Senders stop by themselves after this long (a bound; tests stop them sooner).
    pub max_send: Duration,
    /// Longest a reader waits for its next line before the test fails.
    pub line_wait: Duration,
    /// Keep every line (arrival order, notices, others' lines) for checks after the run.
    /// Off for long runs: the checks then use running counters and order hashes only.
    pub keep: bool,
    /// Connections joining at once.
    pub join_parallel: usize,
    /// Put before every nickname (`{tag}aud0`, `{tag}snd0`): two audiences on one daemon need
    /// names of their own. Only lines from this audience's senders count as numbered.
    pub tag: &'static str,
    /// The room the audience moves to (`/join`) right after joining; None: the default room.
    pub room: Option<&'static str>,
}

impl Spec {
    /// `members` listeners and `senders` senders at `per_sec` lines per second each.
    pub fn new(members: usize, senders: usize, per_sec: f64) -> Spec {
        Spec {
            members,
            senders,
            per_sec,
            pad: 60,
            max_send: Duration::from_secs(120),
            line_wait: WAIT,
            keep: true,
            join_parallel: 32,
            tag: "",
            room: None,
        }
    }
}

/// What one audience connection received.
#[derive(Debug, Default)]
pub struct Heard {
    pub nick: String,
    /// `Some(j)` if this connection is sender `j` (it does not hear its own lines).
    pub sender: Option<usize>,
    /// Numbered lines `(sender, n)` in arrival order (only with [`Spec::keep`]).
    pub order: Vec<(usize, u64)>,
    /// Numbered lines received per sender (all of them were in order, or the reader failed).
    pub counts: Vec<u64>,
    /// The count announced by each sender's `end` line, once received.
    pub ends: Vec<Option<u64>>,
    /// Order hashes: `views[k]` covers lines of every sender but `k`, `views[S]` all of them.
    pub views: Vec<u64>,
    /// Chat lines from clients outside the audience (only with [`Spec::keep`]).
    pub others: Vec<String>,
    pub others_count: u64,
    /// Server notices (`*** …`) (only with [`Spec::keep`]).
    pub notices: Vec<String>,
    /// The last line received.
    pub last: Option<String>,
    /// The connection ended (EOF or error) before every `end` line arrived.
    pub eof: bool,
}

/// What the first listener has seen so far, for tests waiting on events.
#[derive(Debug, Default, Clone)]
pub struct Progress {
    /// Numbered lines received.
    pub lines: u64,
    /// Notices received (only with [`Spec::keep`]).
    pub notices: Vec<String>,
    /// Chat lines from outside the audience (only with [`Spec::keep`]).
    pub others: Vec<String>,
}

struct Shared {
    /// Per sender: lines whose write had completed.
    sent: Vec<AtomicU64>,
    /// Per sender: 1 + the highest line number any reader has received.
    seen: Vec<AtomicU64>,
    progress: watch::Sender<Progress>,
}

/// A running audience.
pub struct Audience {
    spec: Spec,
    shared: Arc<Shared>,
    stop: CancellationToken,
    senders: Vec<JoinHandle<(u64, OwnedWriteHalf)>>,
    readers: Vec<JoinHandle<Heard>>,
}

/// Everything the audience received, after the checks passed.
#[derive(Debug)]
pub struct Report {
    /// Lines each sender sent.
    pub sent: Vec<u64>,
    pub heard: Vec<Heard>,
}

impl Report {
    /// Lines from anyone outside the audience, as the first listener got them.
    pub fn others(&self) -> &[String] {
        &self.heard[0].others
    }

    /// Notices, as the first listener got them.
    pub fn notices(&self) -> &[String] {
        &self.heard[0].notices
    }

    /// Numbered lines received, summed over every reader.
    pub fn lines_heard(&self) -> u64 {
        self.heard
            .iter()
            .map(|h| h.counts.iter().sum::<u64>())
            .sum()
    }

    /// Readers whose last line was not `line`, with the line they got last.
    pub fn not_last(&self, line: &str) -> Vec<String> {
        let wrong = self
            .heard
            .iter()
            .filter(|h| h.last.as_deref() != Some(line));
        wrong.map(|h| format!("{}: {:?}", h.nick, h.last)).collect()
    }
}

/// Nickname of listener `i` and of sender `j`.
pub fn member_nick(i: usize) -> String {
    format!("aud{i}")
}
pub fn sender_nick(j: usize) -> String {
    format!("snd{j}")
}

/// [`join`], then, given a `room`, `/join`s it and reads up to the line that says it is in
/// it (what the lobby said meanwhile is skipped; a history replay, if any, is left to be read).
pub async fn join_room(
    addr: SocketAddr,
    nick: &str,
    room: Option<&str>,
) -> (BufReader<OwnedReadHalf>, OwnedWriteHalf) {
    let (mut r, mut w) = join(addr, nick).await;
    let Some(room) = room else {
        return (r, w);
    };
    w.write_all(format!("/join {room}\n").as_bytes())
        .await
        .unwrap();
    let now_in = format!("*** Now in {room} (");
    let mut line = String::new();
    // Bounded: every round reads a line within the bound or fails.
    loop {
        line.clear();
        read_line(&mut r, &mut line, nick).await;
        if line.starts_with(&now_in) {
            return (r, w);
        }
        assert!(
            !line.starts_with("*** Cannot join"),
            "{nick}: {line:?} for /join {room}"
        );
    }
}

/// Connects and joins as `nick`: reads to the prompt, sends the nickname, reads the welcome.
pub async fn join(addr: SocketAddr, nick: &str) -> (BufReader<OwnedReadHalf>, OwnedWriteHalf) {
    let (r, mut w) = connect(addr).await.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    loop {
        line.clear();
        read_line(&mut r, &mut line, nick).await;
        if line == "*** Choose a nickname:\r\n" {
            break;
        }
    }
    w.write_all(format!("{nick}\n").as_bytes()).await.unwrap();
    line.clear();
    read_line(&mut r, &mut line, nick).await;
    let welcome = format!("*** Welcome, {nick}! ");
    assert!(line.starts_with(&welcome), "{nick}: {line:?}");
    // In a big room the list of names that follows is wrapped over several lines.
    loop {
        line.clear();
        read_line(&mut r, &mut line, nick).await;
        if line == "*** Type /help for commands.\r\n" {
            break;
        }
        // Notice rows, and the rows a long one is wrapped into (indented).
        assert!(
            line.starts_with("*** ") || line.starts_with("    "),
            "{nick}: {line:?} while joining"
        );
    }
    (r, w)
}

async fn read_line(r: &mut BufReader<OwnedReadHalf>, line: &mut String, nick: &str) {
    let n = tokio::time::timeout(WAIT, r.read_line(line))
        .await
        .unwrap_or_else(|_| panic!("{nick}: no line within {WAIT:?} while joining"))
        .unwrap_or_else(|e| panic!("{nick}: {e} while joining"));
    assert!(n > 0, "{nick}: EOF while joining");
}

impl Audience {
    /// Joins every member and sender to the daemon at `addr` (waiting until all have
    /// joined), then starts the senders.
    pub async fn join(addr: SocketAddr, spec: Spec) -> Audience {
        let s = spec.senders;
        let shared = Arc::new(Shared {
            sent: (0..s).map(|_| AtomicU64::new(0)).collect(),
            seen: (0..s).map(|_| AtomicU64::new(0)).collect(),
            progress: watch::Sender::new(Progress::default()),
        });
        let stop = CancellationToken::new();
        let start = CancellationToken::new();
        let gate = Arc::new(Semaphore::new(spec.join_parallel.max(1)));
        let (joined_tx, mut joined_rx) = tokio::sync::mpsc::channel(spec.members + s);
        let mut readers = Vec::new();
        let mut senders = Vec::new();
        for i in 0..spec.members + s {
            let sender = i.checked_sub(spec.members);
            let nick = spec.tag.to_owned() + &sender.map_or_else(|| member_nick(i), sender_nick);
            let (gate, joined) = (gate.clone(), joined_tx.clone());
            let progress = shared.clone();
            let (half_tx, half_rx) = tokio::sync::oneshot::channel();
            readers.push(tokio::spawn(async move {
                let permit = gate.acquire_owned().await.unwrap();
                let (r, w) = join_room(addr, &nick, spec.room).await;
                drop(permit);
                let _ = joined.send(()).await;
                let keep_open = match sender {
                    Some(_) => {
                        let _ = half_tx.send(w);
                        None
                    }
                    None => Some(w),
                };
                let heard = listen(r, nick, sender, spec, &progress, i == 0).await;
                drop(keep_open);
                heard
            }));
            if let Some(j) = sender {
                let (shared, stop, start) = (shared.clone(), stop.clone(), start.clone());
                senders.push(tokio::spawn(async move {
                    let w = half_rx.await.expect("sender joined");
                    start.cancelled().await;
                    speak(w, j, spec, &shared, &stop).await
                }));
            }
        }
        drop(joined_tx);
        let everyone = spec.members + s;
        let deadline = Instant::now() + WAIT + WAIT * (everyone as u32 / 50);
        for n in 0..everyone {
            tokio::time::timeout_at(deadline, joined_rx.recv())
                .await
                .unwrap_or_else(|_| panic!("only {n} of {everyone} audience clients joined"))
                .expect("an audience client failed to join");
        }
        start.cancel();
        Audience {
            spec,
            shared,
            stop,
            senders,
            readers,
        }
    }

    /// Lines whose write had completed so far, per sender.
    pub fn sent_now(&self) -> Vec<u64> {
        let sent = &self.shared.sent;
        sent.iter().map(|n| n.load(Ordering::SeqCst)).collect()
    }

    /// Per sender, 1 + the highest line number some reader has already received.
    pub fn seen_now(&self) -> Vec<u64> {
        let seen = &self.shared.seen;
        seen.iter().map(|n| n.load(Ordering::SeqCst)).collect()
    }

    /// Waits (at most `bound`) until the first listener has `what` as its progress.
    pub async fn wait(&self, what: &str, bound: Duration, mut cond: impl FnMut(&Progress) -> bool) {
        let mut rx = self.shared.progress.subscribe();
        tokio::time::timeout(bound, rx.wait_for(|p| cond(p)))
            .await
            .unwrap_or_else(|_| {
                let p = self.shared.progress.borrow();
                panic!(
                    "audience: no {what} within {bound:?}; {} lines, last notices {:?}",
                    p.lines,
                    &p.notices[p.notices.len().saturating_sub(10)..]
                )
            })
            .expect("progress sender lives in the audience");
    }

    /// Waits until the first listener has received `n` more numbered lines.
    pub async fn wait_lines(&self, n: u64) {
        let target = self.shared.progress.borrow().lines + n;
        let bound = WAIT + Duration::from_secs_f64(2.0 * n as f64 / self.rate().max(1.0));
        self.wait(&format!("{n} more lines"), bound, |p| p.lines >= target)
            .await;
    }

    /// Waits until the first listener has received a notice equal to `line`.
    pub async fn wait_notice(&self, line: &str, bound: Duration) {
        self.wait(&format!("notice {line:?}"), bound, |p| {
            p.notices.iter().any(|n| n == line)
        })
        .await;
    }

    /// Waits until the first listener has received the chat line `line` from outside the
    /// audience.
    pub async fn wait_other(&self, line: &str, bound: Duration) {
        self.wait(&format!("line {line:?}"), bound, |p| {
            p.others.iter().any(|n| n == line)
        })
        .await;
    }

    /// Waits until the first listener has received a notice starting with `prefix`; returns it.
    pub async fn wait_notice_prefix(&self, prefix: &str, bound: Duration) -> String {
        self.wait(&format!("notice {prefix:?}…"), bound, |p| {
            p.notices.iter().any(|n| n.starts_with(prefix))
        })
        .await;
        let p = self.shared.progress.borrow();
        p.notices
            .iter()
            .find(|n| n.starts_with(prefix))
            .unwrap()
            .clone()
    }

    /// Numbered lines per second the whole audience sends.
    pub fn rate(&self) -> f64 {
        self.spec.per_sec * self.spec.senders as f64
    }

    /// Stops the senders, waits until every reader has every sender's `end` line, and checks
    /// that every reader got every line exactly once and in the same order.
    pub async fn finish(self) -> Report {
        self.stop.cancel();
        let mut sent = Vec::new();
        let mut halves = Vec::new();
        for s in self.senders {
            let (n, w) = join_task(s, "sender").await;
            sent.push(n);
            halves.push(w);
        }
        let mut heard = Vec::new();
        for r in self.readers {
            heard.push(join_task(r, "reader").await);
        }
        drop(halves);
        check_complete(&sent, &heard);
        check_same_order(&heard, self.spec.senders);
        Report { sent, heard }
    }

    /// For a daemon being stopped: waits until every reader reached EOF, checks that each got
    /// `*** server shutting down`, that every line numbered below `due[j]` from sender
    /// `j` reached every reader, in order, and that every reader's lines are a prefix of one
    /// common order. (Whether the shutdown line was the very last line is left to the caller:
    /// see [`Report::not_last`].)
    pub async fn finish_at_shutdown(self, due: &[u64]) -> Report {
        assert!(self.spec.keep, "finish_at_shutdown needs Spec::keep");
        let mut heard = Vec::new();
        for r in self.readers {
            heard.push(join_task(r, "reader").await);
        }
        self.stop.cancel();
        let mut sent = Vec::new();
        for s in self.senders {
            sent.push(join_task(s, "sender").await.0);
        }
        for h in &heard {
            assert!(h.eof, "{}: the connection was not closed", h.nick);
            assert!(
                h.notices.iter().any(|n| n == "*** server shutting down"),
                "{}: no shutdown line; last {:?}",
                h.nick,
                h.last
            );
            for (j, &want) in due.iter().enumerate() {
                if h.sender != Some(j) {
                    assert!(
                        h.counts[j] >= want,
                        "{}: got {} lines from {}, but the first {want} were due (accepted before the stop)",
                        h.nick,
                        h.counts[j],
                        sender_nick(j)
                    );
                }
            }
        }
        check_prefixes(&heard);
        Report { sent, heard }
    }
}

async fn join_task<T>(task: JoinHandle<T>, what: &str) -> T {
    let bound = WAIT * 3;
    match tokio::time::timeout(bound, task).await {
        Err(_) => panic!("audience {what} did not finish within {bound:?}"),
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(r) => r.unwrap(),
    }
}

/// Sends numbered lines at the spec's pace until `stop`, then the `end` line. Returns how many
/// were sent and the write half (kept open until the readers are done: closing it would make
/// the daemon drop this client while others' lines are still on their way to it).
async fn speak(
    mut w: OwnedWriteHalf,
    j: usize,
    spec: Spec,
    shared: &Shared,
    stop: &CancellationToken,
) -> (u64, OwnedWriteHalf) {
    // Senders are spread evenly over the period, so some line is always on its way.
    let period = Duration::from_secs_f64(1.0 / spec.per_sec);
    let phase = period.mul_f64(j as f64 / spec.senders as f64);
    let mut tick = tokio::time::interval_at(Instant::now() + phase, period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let pad: String = (0..spec.pad)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let limit = (spec.per_sec * spec.max_send.as_secs_f64()).ceil() as u64;
    let mut n = 0;
    while n < limit {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let line = format!("seq {j} {n} {pad}\n");
        if w.write_all(line.as_bytes()).await.is_err() {
            return (n, w); // the daemon is gone (shutdown tests)
        }
        n += 1;
        shared.sent[j].store(n, Ordering::SeqCst);
    }
    let _ = w.write_all(format!("end {j} {n}\n").as_bytes()).await;
    (n, w)
}

/// FNV-1a step over a numbered line's identity.
fn mix(h: u64, j: usize, n: u64) -> u64 {
    let mut h = h;
    for b in (j as u64).to_le_bytes().into_iter().chain(n.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Reads until every sender's `end` line (except our own) arrived, or EOF.
async fn listen(
    mut r: BufReader<OwnedReadHalf>,
    nick: String,
    me: Option<usize>,
    spec: Spec,
    shared: &Shared,
    report_progress: bool,
) -> Heard {
    let s = spec.senders;
    let mut h = Heard {
        nick,
        sender: me,
        counts: vec![0; s],
        ends: vec![None; s],
        views: vec![0xcbf2_9ce4_8422_2325; s + 1],
        ..Heard::default()
    };
    let mut raw = Vec::with_capacity(256);
    let done = |h: &Heard| (0..s).all(|j| Some(j) == me || h.ends[j].is_some());
    while !done(&h) {
        raw.clear();
        let got = tokio::time::timeout(spec.line_wait, r.read_until(b'\n', &mut raw)).await;
        let line = match got {
            Err(_) => panic!(
                "{}: no line within {:?}; counts {:?}, ends {:?}, last {:?}",
                h.nick, spec.line_wait, h.counts, h.ends, h.last
            ),
            Ok(Ok(0)) | Ok(Err(_)) => {
                h.eof = true;
                break;
            }
            Ok(Ok(_)) => checked(&raw, &h.nick),
        };
        if let Some((j, n)) = numbered(spec.tag, line) {
            assert!(
                j < s && Some(j) != me,
                "{}: line from an unknown sender: {line:?}",
                h.nick
            );
            assert_eq!(
                n,
                h.counts[j],
                "{}: from {}: expected line {} next, got {line:?}",
                h.nick,
                sender_nick(j),
                h.counts[j]
            );
            h.counts[j] += 1;
            for k in 0..=s {
                if k != j {
                    h.views[k] = mix(h.views[k], j, n);
                }
            }
            if spec.keep {
                h.order.push((j, n));
            }
            shared.seen[j].fetch_max(n + 1, Ordering::SeqCst);
            if report_progress {
                shared.progress.send_modify(|p| p.lines += 1);
            }
        } else if let Some((j, count)) = end_line(spec.tag, line) {
            h.ends[j] = Some(count);
        } else if line.starts_with("*** ") {
            if spec.keep {
                h.notices.push(line.to_owned());
            }
            if report_progress && spec.keep {
                shared
                    .progress
                    .send_modify(|p| p.notices.push(line.to_owned()));
            }
        } else {
            h.others_count += 1;
            if spec.keep {
                h.others.push(line.to_owned());
            }
            if report_progress && spec.keep {
                shared
                    .progress
                    .send_modify(|p| p.others.push(line.to_owned()));
            }
        }
        h.last = Some(line.to_owned());
    }
    h
}

/// The line without its CRLF, after checking what every line from the server must satisfy.
fn checked<'a>(raw: &'a [u8], nick: &str) -> &'a str {
    assert!(
        raw.ends_with(b"\r\n"),
        "{nick}: line without CRLF: {:?}",
        String::from_utf8_lossy(raw)
    );
    let body = &raw[..raw.len() - 2];
    if body.iter().all(|b| (0x20..0x7f).contains(b)) {
        // Printable ASCII, the common case: nothing more to check.
        return std::str::from_utf8(body).unwrap();
    }
    let text = std::str::from_utf8(body)
        .unwrap_or_else(|e| panic!("{nick}: invalid UTF-8 from the server ({e}): {raw:?}"));
    if let Some(c) = text.chars().find(|&c| forbidden(c)) {
        panic!(
            "{nick}: forbidden char U+{:04X} reached a client: {text:?}",
            c as u32
        );
    }
    text
}

/// Characters that must never reach a terminal: controls (C0, DEL, C1), bidi controls and
/// the Unicode line/paragraph separators.
pub fn forbidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
                | '\u{2028}' | '\u{2029}'
        )
}

/// `<{tag}sndJ> seq J N …` → (J, N).
fn numbered(tag: &str, line: &str) -> Option<(usize, u64)> {
    let rest = line
        .strip_prefix('<')?
        .strip_prefix(tag)?
        .strip_prefix("snd")?;
    let (_, body) = rest.split_once("> seq ")?;
    let mut it = body.split(' ');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// `<{tag}sndJ> end J COUNT` → (J, COUNT).
fn end_line(tag: &str, line: &str) -> Option<(usize, u64)> {
    let rest = line
        .strip_prefix('<')?
        .strip_prefix(tag)?
        .strip_prefix("snd")?;
    let (_, body) = rest.split_once("> end ")?;
    let (j, count) = body.split_once(' ')?;
    Some((j.parse().ok()?, count.parse().ok()?))
}

/// Every reader got every line of every other sender, and that sender's `end`.
fn check_complete(sent: &[u64], heard: &[Heard]) {
    for h in heard {
        assert!(
            !h.eof,
            "{}: disconnected; counts {:?} of {sent:?}, last {:?}",
            h.nick, h.counts, h.last
        );
        for (j, &n) in sent.iter().enumerate() {
            if h.sender == Some(j) {
                continue;
            }
            assert_eq!(
                h.ends[j],
                Some(n),
                "{}: end line of {}",
                h.nick,
                sender_nick(j)
            );
            assert_eq!(h.counts[j], n, "{}: lines from {}", h.nick, sender_nick(j));
        }
    }
}

/// Readers that hear the same senders heard them in the same order: for each sender k, the
/// listeners and k itself agree on the order of everyone else's lines; listeners also agree
/// on the order of all lines.
fn check_same_order(heard: &[Heard], senders: usize) {
    for view in 0..=senders {
        let group: Vec<&Heard> = heard
            .iter()
            .filter(|h| h.sender.is_none() || h.sender == Some(view))
            .collect();
        if let Some(first) = group.first() {
            for h in &group {
                assert_eq!(
                    h.views[view], first.views[view],
                    "{} and {} saw lines in different orders",
                    h.nick, first.nick
                );
            }
        }
    }
}

/// Each reader's lines (its own left out) are a prefix of one common order.
fn check_prefixes(heard: &[Heard]) {
    let Some(longest) = heard.iter().max_by_key(|h| h.order.len()) else {
        return;
    };
    for h in heard {
        let common = longest.order.iter().filter(|(j, _)| Some(*j) != h.sender);
        let mine = h.order.iter().filter(|(j, _)| Some(*j) != longest.sender);
        for (i, (a, b)) in common.zip(mine).enumerate() {
            assert_eq!(a, b, "{} and {} differ at line {i}", h.nick, longest.nick);
        }
    }
}
